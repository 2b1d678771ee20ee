"""The seed study's figures, written as PNG files (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from landmark_ae.runs import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_distribution(counts_all: np.ndarray, counts_sampled: np.ndarray, path: Path, title: str) -> Path:
    """Seed Figure 1: images per landmark in the whole CSV vs the sampled slice (normalised)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    top = max(int(np.max(counts_all, initial=1)), int(np.max(counts_sampled, initial=1)))
    bins = np.unique(np.geomspace(1, top + 1, 30).astype(int))
    ax.hist(counts_all, bins=bins, density=True, alpha=0.5, label=f"original ({len(counts_all)} landmarks)")
    ax.hist(counts_sampled, bins=bins, density=True, alpha=0.5, label=f"sampled ({len(counts_sampled)} landmarks)")
    ax.set_xscale("log")
    ax.set_xlabel("images per landmark")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def plot_losses(epochs: Sequence[int], train: Sequence[float], val: Sequence[float], path: Path, title: str) -> Path:
    """Seed Figures 3/4/7: training and validation loss per epoch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    from matplotlib.ticker import MaxNLocator

    ax.plot(epochs, train, marker="o", label="train")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.plot(epochs, val, marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, path: Path, title: str) -> Path:
    """Seed Figures 5/8: originals (top row) above their reconstructions (bottom row); uint8 HWC."""
    plt = _pyplot()
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for i in range(n):
        for row, images in enumerate((originals, reconstructions)):
            axes[row, i].imshow(images[i])
            axes[row, i].axis("off")
    axes[0, 0].set_title("original", loc="left", fontsize=9)
    axes[1, 0].set_title("reconstruction", loc="left", fontsize=9)
    fig.suptitle(title)
    return _save(fig, path)


def plot_retrieval_grid(queries: np.ndarray, results: list[dict], path: Path, title: str, max_rows: int = 8) -> Path:
    """Seed Figures 6/9: each query (left) and its nearest images with their distances."""
    from PIL import Image

    plt = _pyplot()
    rows = results[:max_rows]
    cols = 1 + max(len(r["neighbours"]) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.5 * cols, 1.8 * len(rows)), squeeze=False)
    for i, r in enumerate(rows):
        for ax in axes[i]:
            ax.axis("off")
        axes[i, 0].imshow(queries[i])
        axes[i, 0].set_title("query", fontsize=8, color="tab:blue")
        for j, hit in enumerate(r["neighbours"], start=1):
            with Image.open(hit["path"]) as img:
                axes[i, j].imshow(np.asarray(img.convert("RGB")))
            axes[i, j].set_title(f"{hit['distance']:.2f} · {hit['landmark_id']}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
