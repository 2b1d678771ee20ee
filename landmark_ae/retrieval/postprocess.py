"""Embedding post-processing for retrieval: pooling of conv latents, L2, PCA-whitening.

    pool(latent, "flatten"|"avg"|"max"|"gem", p)   (B, C, H, W) -> (B, D); a (B, D) latent is kept
    encoder_rows(encoder, x, pooling, p)           an encoder's pooled rows; for one that pools itself
                                                   (M5) avg/max/gem replace its own global pooling
    Transform.fit(x, l2, pca_whiten)               fitted on the database rows (train+val) only
    Transform.apply(x)                             the same steps for any rows, e.g. query images

With `l2` and `pca_whiten` together the steps are the usual L2 -> centre -> project on the top
principal axes, each scaled to unit variance -> L2. Kept to numpy (pool() takes torch tensors but imports
no torch; no sklearn): `query` applies the stored transform on its fast path. Saved as transform.npz in the embed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pool() only calls a tensor's own methods: query and serve on ONNX import no torch
    import torch

POOLINGS = ("flatten", "avg", "max", "gem")

__all__ = ["POOLINGS", "Transform", "encoder_rows", "global_pool_start", "pool"]


def pool(latent: torch.Tensor, how: str = "flatten", p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """One row per image. For a (B, C, H, W) conv latent: `flatten` keeps every value, `avg`/`max`
    pool each channel over space, `gem` is generalised mean pooling (mean of x^p, to the 1/p; p=1
    is `avg`, p -> inf tends to `max`; values clamped to >= eps). A (B, D) latent is returned as is."""
    if how not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {how!r}")
    if latent.ndim == 2 or how == "flatten":
        return latent.flatten(1)
    if latent.ndim != 4:
        raise ValueError(f"cannot pool a latent of shape {tuple(latent.shape)}")
    if how == "avg":
        return latent.mean(dim=(2, 3))
    if how == "max":
        return latent.amax(dim=(2, 3))
    x = latent.clamp(min=eps)
    top = x.amax(dim=(2, 3), keepdim=True)  # scaled by the max first: no overflow for large p
    return (x / top).pow(p).mean(dim=(2, 3)).pow(1.0 / p) * top.flatten(1)


def global_pool_start(encoder: Any) -> int | None:
    """Where a Sequential encoder's own global pooling begins (an output-size-1 adaptive pool, then at
    most a Flatten, at its end), or None: the index that `encoder[:i]` stops before to give its last map."""
    from torch import nn  # only callers that hold a torch model get here

    if not isinstance(encoder, nn.Sequential) or len(encoder) == 0:
        return None
    layers = list(encoder)
    i = len(layers) - 1 if isinstance(layers[-1], nn.Flatten) else len(layers)
    last = layers[i - 1] if i >= 1 else None
    if isinstance(last, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and last.output_size in (1, (1, 1)):
        return i - 1
    return None


def encoder_rows(encoder: Any, x: torch.Tensor, pooling: str = "flatten", gem_p: float = 3.0) -> torch.Tensor:
    """One row per image of a (B, 3, H, W) batch: the encoder's latent, pooled (pool). flatten keeps
    the latent as the model made it. A spatial pooling (avg, max, gem) of an encoder that ends in
    global pooling itself (M5) replaces that pooling: it is applied to the last feature map, so
    `pooling=gem` gives M5 a GeM row in place of its average (same length). embed and encoder.onnx's
    graph both call it."""
    start = None if pooling == "flatten" else global_pool_start(encoder)
    if start is None:
        return pool(encoder(x), pooling, gem_p)
    return pool(encoder[:start](x), pooling, gem_p)


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class Transform:
    """L2 and/or PCA-whitening with its fitted parameters (mean and projection; empty when unused)."""

    l2: bool = False
    mean: np.ndarray | None = None  # (D,)
    projection: np.ndarray | None = None  # (D, d): principal axes / sqrt(eigenvalue)

    @property
    def identity(self) -> bool:
        return not self.l2 and self.projection is None

    @classmethod
    def fit(cls, x: np.ndarray, l2: bool = False, pca_whiten: int | None = None, shrink: float = 1e-6) -> "Transform":
        """Fit on `x` (the database rows only). pca_whiten: output dimensions (at most D and the
        number of rows - 1). `shrink` times the largest eigenvalue is added to every eigenvalue, so
        near-empty directions are not blown up."""
        if not pca_whiten:
            return cls(l2=l2)
        x = np.asarray(x, dtype=np.float64)
        n, dim = x.shape
        d = int(pca_whiten)
        if d > min(dim, n - 1):
            raise ValueError(f"at most {min(dim, n - 1)} axes can be fitted here ({n} database rows of {dim} values)")
        if l2:
            x = _l2(x)
        mean = x.mean(axis=0)
        centred = x - mean
        if dim <= n:
            values, vectors = np.linalg.eigh(centred.T @ centred / n)
            order = np.argsort(values)[::-1][:d]
            values, vectors = values[order], vectors[:, order]
        else:  # fewer rows than dimensions: the SVD of the data is cheaper than a D x D covariance
            _, s, vt = np.linalg.svd(centred, full_matrices=False)
            values, vectors = (s[:d] ** 2) / n, vt[:d].T
        values = np.maximum(values, 0) + shrink * max(float(values[0]), 1e-12)
        # each axis's sign fixed (largest |loading| positive): the same data always gives the same transform
        flip = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(d)])
        vectors = vectors * np.where(flip == 0, 1, flip)
        return cls(l2=l2, mean=mean.astype(np.float32), projection=(vectors / np.sqrt(values)).astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.projection is not None:
            if self.l2:
                x = _l2(x)
            x = (x - self.mean) @ self.projection
        if self.l2:
            x = _l2(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def save(self, path: Path | str) -> None:
        arrays = {"l2": np.array(self.l2)}
        if self.projection is not None:
            arrays.update(mean=self.mean, projection=self.projection)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: Path | str) -> "Transform":
        with np.load(path, allow_pickle=False) as z:
            return cls(l2=bool(z["l2"]), mean=z["mean"] if "mean" in z else None,
                       projection=z["projection"] if "projection" in z else None)
