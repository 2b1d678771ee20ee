"""The no-learning baseline: raw pixels, area-downsampled to about an embedding's dimension.

Computed here only, for `evaluate` (beside the model's scores) and `scripts/quality.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from landmark_ae.common import SPLITS
from landmark_ae.data.prepared import load_prepared
from landmark_ae.errors import UserError
from landmark_ae.retrieval.embed_run import EmbedRun


def pixel_side(dim: int) -> int:
    """Side s of an s x s x 3 pixel baseline with about `dim` values (M2's 1568 -> 23)."""
    return max(4, int(round((dim / 3) ** 0.5)))


def pixel_embeddings(images: np.ndarray, side: int, chunk: int = 512) -> np.ndarray:
    """Raw pixels, area-downsampled to side x side, scaled to [-1, 1] and flattened (no learning)."""
    out = []
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(np.array(images[start : start + chunk])).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.adaptive_avg_pool2d(x, side) / 127.5 - 1.0
        out.append(x.flatten(1).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 3 * side * side), np.float32)


def pixel_baseline(run: EmbedRun) -> tuple[str, np.ndarray]:
    """(name, matrix): raw pixels of the very images the embed run holds, in its index order, at the
    side matching the model's own embedding size (before any PCA), e.g. `pixels_23x23` beside M2.
    Reads the prepared dataset the embed run recorded."""
    data_dir = Path(run.meta["data_dir"])
    splits = load_prepared(data_dir, SPLITS)
    ids = [i for s in SPLITS for i in splits[s].manifest["id"]]
    if ids != run.ids:
        raise UserError(f"{data_dir} changed since {run.run_dir} was embedded: re-run `landmark-ae embed`")
    side = pixel_side(int(run.meta["raw_dim"]))
    return f"pixels_{side}x{side}", np.concatenate([pixel_embeddings(splits[s].images, side) for s in SPLITS])
