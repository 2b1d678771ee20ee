"""Training under torchrun (train/distributed.py, train/step.py): 2 gloo ranks on CPU.

The core claim: one DDP step over 2 ranks, each holding half of the global batch, gives the same
gradients as one process on the whole batch, for the reconstruction and the contrastive objective
(whose NT-Xent must see the global batch through the gathered projections)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import REPO, results, step_of
from omegaconf import OmegaConf

from landmark_ae.config import ObjectiveConfig
from landmark_ae.data.prepared import ImageBatches
from landmark_ae.errors import UserError
from landmark_ae.model.builder import build_model
from landmark_ae.train.distributed import Ranks
from landmark_ae.train.loop import batch_rows, check_global_batch, train_one_epoch
from landmark_ae.train.step import Precision, build_step

# Small, BatchNorm-free (local BatchNorm statistics would differ by design: sync_bn is CUDA-only),
# with a projector, so every part of the contrastive objective is exercised.
TINY = {
    "name": "tiny", "input_size": 16,
    "encoder": [{"type": "Conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1},
                {"type": "ReLU"}, {"type": "AdaptiveAvgPool2d", "output_size": 2}, {"type": "Flatten"}],
    "projector": [{"type": "Linear", "in_features": 32, "out_features": 16}],
    "decoder": [{"type": "Linear", "in_features": 32, "out_features": 768},
                {"type": "Unflatten", "dim": 1, "unflattened_size": [3, 16, 16]}, {"type": "Tanh"}],
}
GLOBAL_BATCH = 8


def objective(name: str):
    if name == "reconstruct":
        return None
    return OmegaConf.structured(ObjectiveConfig(name="contrastive", crop_scale=0.3, greyscale=0.2, temperature=0.2))


def batch() -> torch.Tensor:
    return torch.randint(0, 256, (GLOBAL_BATCH, 3, 16, 16), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)


def first_step_grads(name: str, ranks: Ranks) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(TINY)
    obj = objective(name)
    step = build_step(model, obj, ranks, torch.device("cpu"), sync_bn=False, compile_step=False)
    if not ranks.distributed:
        step = step_of(model, obj)
    lo, hi = ranks.rows(GLOBAL_BATCH)
    part = (lo, hi, GLOBAL_BATCH) if ranks.distributed else None
    loss = step(batch()[lo:hi], torch.Generator().manual_seed(1), part)
    loss.backward()
    # The projector gets no gradient outside the contrastive objective: None, on both sides.
    return {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}


def _rank(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        for name in ("reconstruct", "contrastive"):
            torch.save(first_step_grads(name, Ranks(rank, 2, rank)), Path(out_dir) / f"{name}-{rank}.pt")
        # Both ranks done before either tears gloo down: a rank destroying its group while the other
        # still talks to it can abort ("terminate called without an active exception", seen once in CI).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_take_the_same_first_step_as_one_process(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for name in ("reconstruct", "contrastive"):
        single = first_step_grads(name, Ranks.single())
        for rank in (0, 1):
            ddp = torch.load(tmp_path / f"{name}-{rank}.pt")
            assert ddp.keys() == single.keys()
            for key, grad in single.items():
                if grad is None:
                    assert ddp[key] is None and key.startswith("projector")
                    continue
                assert torch.allclose(ddp[key], grad, rtol=1e-4, atol=1e-6), (name, rank, key)
        # Every part gets a non-zero gradient where it is used: the comparison means something.
        used = [g for g in single.values() if g is not None]
        assert used and all(g.abs().sum() > 0 for g in used)
        assert len(used) == len(single) if name == "contrastive" else len(used) < len(single)


def test_batches_split_evenly_over_ranks():
    with pytest.raises(UserError, match="batch_size=33 is the global batch and must split evenly over the 2 ranks"):
        check_global_batch(33, Ranks(0, 2, 0))
    check_global_batch(33, Ranks.single())
    two = Ranks(1, 2, 1)
    assert two.rows(8) == (4, 8) and Ranks(0, 2, 0).rows(8) == (0, 4)
    # 21 images in batches of 8: the short last batch drops its odd image; 1 image left: skipped.
    assert batch_rows(21, 8, two) == [(0, 8), (8, 16), (16, 20)]
    assert batch_rows(17, 8, two) == [(0, 8), (8, 16)]
    assert batch_rows(21, 8) == [(0, 8), (8, 16), (16, 21)]


@pytest.mark.slow  # ~9 s: a real torchrun launch; DDP's result is checked by the 2-rank gloo test by default
def test_torchrun_trains_one_run_that_rank_0_writes(tiny_prepared, tmp_path):
    """`torchrun --nproc-per-node=2 -m landmark_ae train`: one run dir, world_size 2 in run.json,
    rank 0's files only, results printed once."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    outputs = tmp_path / "outputs"
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs), "OMP_NUM_THREADS": "1"}
    base = [torchrun, "--standalone", "--nproc-per-node=2", "-m", "landmark_ae", "train", "data=gldv2",
            f"data_dir={tiny_prepared}", "model=m1", "epochs=1", "progress=false", f"paths.output_dir={outputs}"]
    proc = subprocess.run([*base, "batch_size=32"], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run_dir\t") == 1
    out = results(proc)
    assert out["world_size"] == "2"
    runs = list((outputs / "train").iterdir())
    assert runs == [Path(out["run_dir"])]
    run = runs[0]
    record = json.loads((run / "run.json").read_text())
    assert record["world_size"] == 2 and record["status"] == "complete"
    assert {"best.pt", "last.pt", "history.csv", "manifest.json", "train.log", ".hydra"} <= {p.name for p in run.iterdir()}
    assert not list(run.rglob("*.tmp")) and not (run / ".lock").exists()
    assert "epoch 1/1" in (run / "train.log").read_text()



def test_gpu_settings_refuse_what_this_device_cannot_do():
    cpu = torch.device("cpu")
    with pytest.raises(UserError, match="amp=fp16 needs CUDA"):
        Precision.from_config("fp16", cpu)
    with pytest.raises(UserError, match="sync_bn=true needs CUDA"):
        build_step(build_model(TINY), None, Ranks(0, 2, 0), cpu, sync_bn=True, compile_step=False)


def test_bf16_autocast_trains_on_cpu():
    torch.manual_seed(0)
    model = build_model(TINY)
    opt = torch.optim.Adam(model.parameters())
    x = batch()
    images = ImageBatches(x.permute(0, 2, 3, 1).contiguous().numpy(), 16)
    loss = train_one_epoch(step_of(model), images, opt, 4, torch.Generator().manual_seed(0), torch.device("cpu"),
                           precision=Precision.from_config("bf16", torch.device("cpu")))
    assert 0 < loss < 1 and all(torch.isfinite(p).all() for p in model.parameters())
