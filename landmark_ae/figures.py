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
    """Seed Figures 6/9: each query (left) and its nearest images with their distances. A database
    image that can no longer be read (moved, replaced by a FIFO, ...) is an empty cell saying so."""
    from landmark_ae.data.images import ImageError, open_rgb
    from landmark_ae.retrieval.collection import read_image_file

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
            try:
                axes[i, j].imshow(np.asarray(open_rgb(read_image_file(hit["path"]))))
            except ImageError as exc:
                axes[i, j].text(0.5, 0.5, exc.reason, ha="center", va="center", fontsize=7, transform=axes[i, j].transAxes)
            label = hit.get("class_name") or ("" if hit["landmark_id"] is None else hit["landmark_id"])
            axes[i, j].set_title(f"{hit['distance']:.2f} · {str(label)[:18]}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_sweep(series: dict[str, list[tuple[str, float]]], x_label: str, y_label: str, path: Path,
               title: str) -> Path:
    """`landmark-ae runs plot=true`: a metric against a swept setting, one line per series.
    series: label -> (x value as given on the command line, y) points; x is numeric where every
    value is a number (a log axis where they span more than 20x and are all positive), otherwise
    categories in their sorted order."""
    plt = _pyplot()
    xs = [x for points in series.values() for x, _ in points]

    def number(x: str) -> float | None:
        try:
            return float(x)
        except ValueError:
            return None

    numeric = all(number(x) is not None for x in xs)
    categories = sorted(set(xs))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, points in series.items():
        if numeric:
            pts = sorted((float(x), y) for x, y in points)
        else:
            pts = sorted((categories.index(x), y) for x, y in points)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    if numeric:
        values = [float(x) for x in xs]
        if min(values) > 0 and max(values) / min(values) > 20:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 6 else 0)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_embedding_map(db_points: np.ndarray, db_labels: np.ndarray, query_points: np.ndarray,
                       query_labels: np.ndarray, path: Path, title: str, top: int = 20) -> Path:
    """`evaluate`'s embedding_map.png: 2-D points of the database (dots) and the queries (crosses),
    coloured by landmark: the `top` landmarks with the most database rows each a colour, the rest grey."""
    plt = _pyplot()
    landmarks, counts = np.unique(db_labels, return_counts=True)
    coloured = landmarks[np.argsort(-counts, kind="stable")[:top]]
    # tab20 without its two greys (grey is the rest), and two of tab20b's in their place
    palette = [plt.get_cmap("tab20")(i) for i in range(20) if i not in (14, 15)]
    palette += [plt.get_cmap("tab20b")(i) for i in (0, 8, 4, 12)]
    fig, ax = plt.subplots(figsize=(7, 6))
    grey = "#b0b0b0"
    for points, labels, marker, size in ((db_points, db_labels, "o", 8), (query_points, query_labels, "x", 40)):
        rest = ~np.isin(labels, coloured)
        if rest.any():
            ax.scatter(points[rest, 0], points[rest, 1], s=size, c=grey, marker=marker, linewidths=0.8, alpha=0.5)
        for i, landmark in enumerate(coloured):
            mine = labels == landmark
            if mine.any():
                ax.scatter(points[mine, 0], points[mine, 1], s=size, color=palette[i % len(palette)], marker=marker,
                           linewidths=0.8, alpha=0.8, label=str(landmark) if marker == "o" else None)
    if len(coloured):
        more = f" (+{len(landmarks) - len(coloured)} grey)" if len(landmarks) > len(coloured) else ""
        ax.legend(title=f"landmark{more}", fontsize=7, title_fontsize=8, markerscale=1.5,
                  loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_per_landmark_ap(landmarks: Sequence[str], aps: Sequence[float], path: Path, title: str, k: int = 100) -> Path:
    """`evaluate`'s per_landmark_ap.png: mean AP@k of each landmark's queries, as given (best first);
    landmark ids on the axis while they fit (60)."""
    plt = _pyplot()
    n = len(landmarks)
    fig, ax = plt.subplots(figsize=(min(14, max(5, 0.22 * n + 2)), 4))
    ax.bar(range(n), aps, width=0.8 if n <= 200 else 1.0, color="tab:blue")
    if 0 < n <= 60:
        ax.set_xticks(range(n), list(landmarks), rotation=90, fontsize=7)
    else:
        ax.set_xticks([])
    ax.set_xlabel(f"landmark ({n}), by mean AP@{k}")
    ax.set_ylabel(f"mean AP@{k}")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
