"""Checkpoints: weights plus the resolved model config, loaded weights-only.

Kept free of pandas/hydra imports: `query` loads a checkpoint on its fast path.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import torch

from landmark_ae.errors import UserError
from landmark_ae.model.builder import ConvAutoencoder, build_model
from landmark_ae.runs import atomic_path, sha256_file

# Format 2: every checkpoint names its dataset (`data`, from the prepare run's dataset.json), its
# `objective` and `channels_last`; last.pt also its lr `schedule`. Format 1 files (older runs) are
# upgraded on load, in `_upgrade_v1` only, with what those runs used when a key was absent.
CHECKPOINT_FORMAT = "landmark-ae/checkpoint/2"
_FORMAT_V1 = "landmark-ae/checkpoint/1"


def save_checkpoint(path: Path, **payload: Any) -> None:
    with atomic_path(path) as tmp:
        try:
            torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
        except RuntimeError as exc:
            # torch's zip writer reports a failed write (e.g. a full disk) as a RuntimeError
            # ("[enforce fail at inline_container.cc] . unexpected pos"); say what it is.
            full = shutil.disk_usage(tmp.parent).free < 64 * 2**20
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OSError(errno.ENOSPC if full else errno.EIO, f"could not write the checkpoint: {first}",
                          str(path)) from exc


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    """Weights-only loading: a checkpoint carrying code is refused, not run."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found: train a model first (`landmark-ae train`)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise UserError(f"{path} is not a loadable landmark-ae checkpoint: weights-only loading refused it "
                        f"({type(exc).__name__}; a file that carries code is never run): use a best.pt that "
                        "`landmark-ae train` wrote") from None
    if isinstance(ckpt, dict) and ckpt.get("format") == _FORMAT_V1:
        ckpt = _upgrade_v1(ckpt)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a landmark-ae checkpoint")
    return ckpt


def _upgrade_v1(ckpt: dict) -> dict:
    """A format-1 checkpoint as format 2. Runs from before objectives, schedules and channels-last
    existed trained the seed's way: plain reconstruction, a constant lr, the default memory layout."""
    from landmark_ae.config import ObjectiveConfig, enum_value

    defaults = {k: enum_value(v) for k, v in vars(ObjectiveConfig()).items()}
    upgraded = {**ckpt, "format": CHECKPOINT_FORMAT}
    upgraded.setdefault("objective", defaults)
    upgraded.setdefault("channels_last", False)
    upgraded.setdefault("data", "unknown")
    if "optimizer" in upgraded:  # last.pt
        history = upgraded.get("history") or []
        upgraded.setdefault("schedule", {"name": "constant", "epochs": len(history), "batches": 0})
        upgraded.setdefault("scheduler", None)
    return upgraded


def model_from_checkpoint(ckpt: dict) -> ConvAutoencoder:
    """Rebuild the model from the config the checkpoint carries and load its weights."""
    model = build_model(ckpt["model_config"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"checkpoint weights do not fit model {ckpt['model_config'].get('name')}: {first[:200]}") from None
    return model


def fingerprint(path: Path | str) -> str:
    """sha256 of a checkpoint file: ties embeddings to the exact weights that made them."""
    return sha256_file(path)


def checked_sha256(run_dir: Path | str, remake: str, name: str = "best.pt") -> str:
    """sha256 of a run's checkpoint, checked against the run's manifest, the file hashed once:
    runs.check_artifacts hashes it whole to match the manifest's `sha256:<digest>` (files up to
    64 MiB), and that digest is the fingerprint; a larger file (the manifest holds a hash of its
    ends) or a run without a manifest is hashed here. A missing or changed file: one line, `remake`."""
    from landmark_ae.runs import Run, check_artifacts

    check_artifacts(Path(run_dir), [name], remake)
    entry = ((Run(run_dir).manifest or {}).get("artifacts") or {}).get(name)
    recorded = str(entry.get("fingerprint", "")) if isinstance(entry, dict) else ""
    return recorded.removeprefix("sha256:") if recorded.startswith("sha256:") else fingerprint(Path(run_dir) / name)
