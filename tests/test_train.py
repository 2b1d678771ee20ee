"""train through the real CLI: checkpoints, history, figures, determinism, resume after a kill."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO, results, run_cli
from landmark_ae.model.checkpoints import load_checkpoint, model_from_checkpoint


def train(outputs: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("train", "data=gldv2", "progress=false", "batch_size=32", *args, outputs=outputs)


def test_train_writes_checkpoints_history_and_figures(tiny_prepared, tmp_path):
    outputs = tiny_prepared.parent.parent  # default data_dir: the latest prepare run of data=gldv2
    proc = train(outputs, "model=m1", "epochs=2")
    assert proc.returncode == 0, proc.stderr
    res = results(proc)
    assert set(res) == {"run_dir", "model", "epochs", "best_epoch", "best_val_loss", "train_images_per_s"}
    assert all("\t" in line for line in proc.stdout.splitlines())  # stdout: results only
    run_dir = Path(res["run_dir"])
    assert res["model"] == "m1" and res["epochs"] == "2"
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "seconds", "images_per_s"]
    assert list(history["epoch"]) == [1, 2]
    assert float(res["best_val_loss"]) == pytest.approx(history["val_loss"].min(), abs=1e-6)
    for png in ("loss_curve.png", "reconstructions.png"):
        assert (run_dir / png).read_bytes()[:4] == b"\x89PNG"

    # best.pt alone rebuilds the model (weights-only loading, config inside)
    alone = tmp_path / "alone.pt"
    shutil.copy(run_dir / "best.pt", alone)
    raw = torch.load(alone, weights_only=True)
    assert raw["model_config"]["name"] == "m1" and raw["epoch"] == int(res["best_epoch"])
    model = model_from_checkpoint(load_checkpoint(alone)).eval()
    x = torch.zeros(1, 3, 92, 92)
    assert model(x).shape == x.shape and model.embed(x).shape == (1, 392)


@pytest.mark.slow
def test_training_is_deterministic_on_cpu(tiny_prepared):
    outputs = tiny_prepared.parent.parent
    runs = [train(outputs, f"data_dir={tiny_prepared}", "model=m2", "epochs=1", "device=cpu") for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    a, b = (pd.read_csv(Path(results(r)["run_dir"]) / "history.csv") for r in runs)
    assert a[["train_loss", "val_loss"]].equals(b[["train_loss", "val_loss"]])


def test_killed_training_resumes_to_the_same_result(tiny_prepared, tmp_path):
    outputs = tmp_path / "outputs"
    args = ["train", "data=gldv2", f"data_dir={tiny_prepared}", "model=m3", "epochs=4", "batch_size=16",
            "progress=false", "device=cpu"]
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs)}
    proc = subprocess.Popen([sys.executable, "-m", "landmark_ae", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline, last = time.time() + 180, None
    while time.time() < deadline and proc.poll() is None:
        found = list(outputs.glob("train/*/last.pt"))
        if found:
            last = found[0]
            break
        time.sleep(0.01)
    assert last is not None and proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = last.parent
    done_before = len(pd.read_csv(run_dir / "history.csv"))
    assert 1 <= done_before < 4

    resumed = run_cli(*args, f"resume={run_dir}", outputs=outputs)
    assert resumed.returncode == 0, resumed.stderr
    assert results(resumed)["run_dir"] == str(run_dir) and results(resumed)["epochs"] == "4"
    straight = run_cli(*args, outputs=outputs)
    a = pd.read_csv(run_dir / "history.csv")
    b = pd.read_csv(Path(results(straight)["run_dir"]) / "history.csv")
    assert list(a["epoch"]) == [1, 2, 3, 4]
    assert a[["train_loss", "val_loss"]].equals(b[["train_loss", "val_loss"]])
    assert (run_dir / ".hydra" / "config.yaml").is_file() and list((run_dir / ".hydra").glob("resume-*"))


def test_train_bad_inputs(tmp_path, tiny_prepared):
    def err(outputs: Path, *args: str) -> str:
        proc = train(outputs, *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
        return proc.stderr

    empty = tmp_path / "empty_outputs"
    message = err(empty)
    assert "no complete prepare run found" in message and "landmark-ae prepare data=gldv2" in message
    assert "does not exist" in err(empty, f"data_dir={tmp_path / 'nope'}")
    (tmp_path / "hollow").mkdir()
    assert "holds no prepared train split" in err(empty, f"data_dir={tmp_path / 'hollow'}")
    assert "has no last.pt" in err(empty, f"data_dir={tiny_prepared}", f"resume={tmp_path / 'hollow'}")
    assert "device=cuda but CUDA is not available" in err(empty, f"data_dir={tiny_prepared}", "device=cuda") or torch.cuda.is_available()


def test_train_one_epoch_is_deterministic_for_a_seed():
    """In-process twin of the slow CLI test above: same seed, same losses and weights, bit for bit."""
    from omegaconf import OmegaConf

    from landmark_ae.config import config_dir
    from landmark_ae.model.builder import build_model
    from landmark_ae.train.loop import train_one_epoch, validation_loss

    cfg = OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "model" / "m2.yaml"))
    cfg.pop("defaults")
    images = torch.randint(0, 256, (40, 3, 92, 92), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))

    def run(seed: int) -> tuple[float, float, torch.Tensor]:
        torch.manual_seed(seed)
        model = build_model(cfg)
        optimizer = torch.optim.Adam(model.parameters())
        generator = torch.Generator().manual_seed(seed)
        loss = train_one_epoch(model, images, optimizer, 16, generator, torch.device("cpu"))
        return loss, validation_loss(model, images, 16, torch.device("cpu")), model.encoder[0].weight.detach().clone()

    a, b, c = run(0), run(0), run(1)
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert a[0] != c[0]
