"""A prepared dataset (a prepare run dir) as uint8 arrays, and the batches the models see.

Images are decoded once, by prepare, into {split}.npy; here they are memory-mapped. Training reads
each batch from the map and resizes it to the model's input size as it goes (ImageBatches), so its
memory does not grow with the dataset (4.1M GLDv2 images would be ~113 GB in RAM).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from landmark_ae.common import SPLITS
from landmark_ae.errors import UserError
from landmark_ae.runs import check_artifacts

if TYPE_CHECKING:
    import pandas as pd

@dataclass
class Split:
    name: str
    images: np.ndarray  # (N, S, S, 3) uint8, memory-mapped
    # id, landmark_id, path, width, height; row i describes images[i]. None when loaded without it
    # (train needs only the pixels: 4.1M manifest rows would take ~0.5 GB of RAM).
    manifest: "pd.DataFrame | None"


def dataset_name(data_dir: Path | str) -> str:
    """The prepared dataset's name as its prepare run recorded it (dataset.json): the one source of
    truth for what a train run was trained on, whatever `data=` says on the train command line."""
    import json

    path = Path(data_dir) / "dataset.json"
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["data"]["name"])
    except FileNotFoundError:
        raise UserError(f"{data_dir} is not a complete prepare run (dataset.json missing): "
                        "run `landmark-ae prepare`, or finish it with resume=<its run dir>") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is damaged ({type(exc).__name__}): prepare the dataset again "
                        "with `landmark-ae prepare`") from None


def _count_rows(csv_path: Path) -> int:
    """Data rows of a manifest (lines after the header), read in 1 MiB blocks: constant memory."""
    lines, last = 0, b"\n"
    with open(csv_path, "rb") as f:
        while block := f.read(1 << 20):
            lines, last = lines + block.count(b"\n"), block[-1:]
    return lines + (last != b"\n") - 1


def load_split(data_dir: Path | str, split: str, manifest: bool = True) -> Split:
    import pandas as pd
    data_dir = Path(data_dir)
    array_path, manifest_path = data_dir / f"{split}.npy", data_dir / f"{split}.csv"
    if not data_dir.is_dir():
        raise UserError(f"dataset {data_dir} does not exist: run `landmark-ae prepare` or pass data_dir=<prepare run dir>")
    if not (array_path.is_file() and manifest_path.is_file()):
        raise UserError(
            f"{data_dir} holds no prepared {split} split ({split}.csv/{split}.npy missing): "
            "run `landmark-ae prepare` (or finish it with resume=<its run dir>)"
        )
    check_artifacts(data_dir, [f"{split}.npy", f"{split}.csv"], "prepare the dataset again with `landmark-ae prepare`")
    try:
        images = np.load(array_path, mmap_mode="r", allow_pickle=False)
        table = pd.read_csv(manifest_path, dtype={"id": str}) if manifest else None
        rows = len(table) if table is not None else _count_rows(manifest_path)
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{array_path if isinstance(exc, (ValueError, OSError)) else manifest_path} is damaged "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): "
                        "prepare the dataset again with `landmark-ae prepare`") from None
    if images.ndim != 4 or images.shape[0] != rows or images.shape[-1] != 3:
        raise UserError(f"{data_dir}: {split}.npy {images.shape} does not match {split}.csv ({rows} rows): "
                        "rerun prepare")
    return Split(split, images, table)


def load_prepared(data_dir: Path | str, splits: tuple[str, ...] = SPLITS, manifests: bool = True) -> dict[str, Split]:
    return {s: load_split(data_dir, s, manifests) for s in splits}


def resize_uint8(images: np.ndarray, size: int, chunk: int = 512) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, size, size) uint8, resized once with antialiasing."""
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(np.array(images[start : start + chunk])).permute(0, 3, 1, 2)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        out[start : start + len(x)] = x
    return out


class ImageBatches:
    """Batches of a memory-mapped (N, S, S, 3) uint8 split as (B, 3, size, size) uint8 tensors,
    resized per batch exactly as resize_uint8 resizes the whole split (antialiased bilinear, each
    image on its own), so streamed and in-memory training see the same pixels."""

    def __init__(self, images: np.ndarray, size: int):
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images)

    def take(self, indices: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The images at `indices`, in that order; rows are read from the map in ascending order."""
        indices = np.asarray(indices, dtype=np.int64)
        ascending = np.argsort(indices, kind="stable")
        rows = np.empty((len(indices), *self.images.shape[1:]), dtype=np.uint8)
        rows[ascending] = self.images[indices[ascending]]
        return resize_uint8(rows, self.size, chunk=max(len(rows), 1))

    def slice(self, start: int, stop: int) -> torch.Tensor:
        return resize_uint8(self.images[start:stop], self.size, chunk=max(stop - start, 1))


def to_model_range(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of the decoders' Tanh."""
    return batch.float().div_(127.5).sub_(1.0)


def to_uint8_hwc(batch: torch.Tensor) -> np.ndarray:
    """Model-range (B, 3, H, W) -> uint8 (B, H, W, 3) for figures."""
    return ((batch.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
