"""device.py: a device this machine cannot run a model on is one line before any work (issue 22 item 12)."""

import pytest

from landmark_ae.device import pick_device
from landmark_ae.errors import UserError


@pytest.mark.parametrize("name, message", [
    ("meta", "device=meta cannot run the model: use auto, cpu or cuda"),
    ("mps", "device=mps but MPS (Apple GPUs) is not available here"),
    ("cuda:7", "device=cuda:7 but"),
    ("gpu0", "device=gpu0 is not a device: use auto, cpu, cuda, cuda:N or mps"),
])
def test_a_device_that_cannot_run_here_is_one_line(name, message):
    import torch

    if name == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(UserError) as info:
        pick_device(name)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert pick_device("cpu").type == "cpu" and pick_device("auto").type in ("cpu", "cuda", "mps")


def test_query_on_meta_is_refused_before_any_work(tiny_embedded, tiny_prepared, tmp_path):
    from conftest import run_in_process

    image = sorted((tiny_prepared / "test").glob("*.jpg"))[0]
    with pytest.raises(UserError, match="device=meta cannot run the model"):
        run_in_process("query", f"embed_run={tiny_embedded}", f"image={image}", "device=meta", run_dir=tmp_path / "q")
