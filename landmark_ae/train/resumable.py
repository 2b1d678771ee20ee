"""What `train resume=<dir>` refuses on top of the checks every command's resume makes (runs.py):
a run whose last.pt is gone although epochs finished, and a change of world size. Torch-free: the
command checks it before Hydra writes anything (commands/train.py), the loop again for in-process
callers (loop.restore_or_start)."""

from __future__ import annotations

from pathlib import Path

from landmark_ae.errors import UserError
from landmark_ae.runs import read_run_record


def finished_epochs(run_dir: Path) -> int:
    """Epochs history.csv records (0 when it is absent or unreadable)."""
    try:
        lines = (run_dir / "history.csv").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return 0
    return sum(1 for line in lines[1:] if line.strip())


def check_train_resume(run_dir: Path, world_size: int) -> None:
    """Refuse, before anything is written, to resume a train run that cannot continue as it began:
    one trained on another number of ranks (its batches split and its views drawn per rank), or one
    whose last.pt is missing although history.csv records finished epochs (it would start again at epoch 1, overwriting
    its best.pt and history.csv)."""
    record = read_run_record(run_dir) or {}
    recorded = record.get("world_size")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1 and recorded != world_size:
        how = (f"`torchrun --nproc-per-node={recorded} -m landmark_ae train resume={run_dir}`" if recorded > 1
               else f"`landmark-ae train resume={run_dir}` (without torchrun)")
        raise UserError(f"resume={run_dir}: this run trains on {recorded} rank(s) (run.json world_size) but this "
                        f"process is one of {world_size}: resume it with {how}")
    if (run_dir / "last.pt").is_file():
        return
    # A best.pt without a history row is epoch 1 cut short before its history.csv (a full disk, a
    # kill): redoing epoch 1 rewrites it the same way, so only recorded epochs are finished work.
    epochs = finished_epochs(run_dir)
    if epochs:
        raise UserError(f"resume={run_dir}: last.pt, which resuming needs, is missing, but the run has {epochs} finished "
                        "epoch(s) in history.csv; resuming would start again at epoch 1 and overwrite them: start a new "
                        "run (without resume=)")
