"""A loaded embed run ready to answer queries: the encoder that made it (torch, or its encoder.onnx on
ONNX Runtime), its post-processing and its database rows, loaded once. `query` uses one per call,
`serve` one per process.

Kept off pandas, sklearn and torchvision: it is on the query and serve start-up paths. With
runtime=onnx it imports no torch either (choose_runtime: auto is onnx on the CPU where the run has
encoder.onnx and no other checkpoint= is asked for).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from landmark_ae.config import enum_value
from landmark_ae.data.images import ImageError, resized_rgb
from landmark_ae.errors import UserError
from landmark_ae.retrieval.collection import read_image_file
from landmark_ae.retrieval.embed_run import REMAKE, EmbedRun
from landmark_ae.retrieval.onnx_encoder import ONNX_FILE, OnnxEncoder
from landmark_ae.runs import check_artifacts, sha256_file

log = logging.getLogger(__name__)


def has_onnx(run: EmbedRun) -> bool:
    """Whether embed wrote (and kept, after its check against torch) encoder.onnx in this run."""
    return isinstance(run.meta.get("onnx"), dict) and (run.run_dir / ONNX_FILE).is_file()


def choose_runtime(run: EmbedRun, runtime: Any = "auto", device: str = "cpu", checkpoint: Any = None) -> str:
    """onnx or torch, for `runtime` (auto, onnx, torch): auto is onnx where the run has encoder.onnx,
    the device is the CPU and no other checkpoint is asked for; onnx where that cannot be, one line."""
    runtime = enum_value(runtime)
    if runtime == "torch":
        return "torch"
    if runtime == "onnx":
        if not has_onnx(run):
            raise UserError(f"runtime=onnx: {run.run_dir} holds no {ONNX_FILE} (made by an older landmark-ae, with "
                            "onnx=false, or over the export's tolerance): re-run `landmark-ae embed`, or pass runtime=torch")
        if device != "cpu":
            raise UserError(f"runtime=onnx runs on the CPU, not device={device}: pass device=cpu, or runtime=torch")
        return "onnx"
    return "onnx" if has_onnx(run) and device == "cpu" and not checkpoint else "torch"


class Retriever:
    """Embeds query images the way the embed run embedded its database, and ranks that database."""

    def __init__(self, run: EmbedRun, checkpoint: str | Path | None = None, device: str = "cpu", batch_size: int = 64,
                 runtime: Any = "auto", threads: int = 0):
        self.run = run
        self.runtime = choose_runtime(run, runtime, device, checkpoint)
        path = Path(checkpoint or run.meta["checkpoint"]).expanduser()
        if self.runtime == "onnx":
            if checkpoint:  # the graph is the run's own checkpoint's: another one cannot be used here
                self._check_checkpoint(path)
            check_artifacts(run.run_dir, [ONNX_FILE], REMAKE)
            self.checkpoint_sha256 = run.meta["checkpoint_sha256"]
            self.encode: Callable[[np.ndarray], np.ndarray] = OnnxEncoder(run.run_dir / ONNX_FILE, batch_size, threads)
        else:
            self.encode = self._torch_encoder(path, device, batch_size)
        self.image_size = int(run.meta["image_size"])
        self.batch_size = batch_size
        self.class_names = run.class_names  # landmark_id -> name, shown beside it in every answer
        self.transform = run.transform()  # the embed run's L2 / PCA-whitening, fitted on its database
        self.rows = run.database()
        if len(self.rows) == 0:
            raise UserError(f"{run.run_dir} has no database images to search")
        self.database = run.database_rows()  # memory-mapped: database.npy after DBA, or a slice of the embeddings
        self.index = run.index(self.database)  # exact (numpy) or the stored index.faiss; with the run's αQE on top
        self.index_name = self.index.name

    def _check_checkpoint(self, path: Path) -> str:
        if not path.is_file():
            raise UserError(f"checkpoint {path} not found: pass checkpoint=<best.pt> or re-run `landmark-ae embed`")
        sha256 = sha256_file(path)
        if sha256 != self.run.meta["checkpoint_sha256"]:
            raise UserError(
                f"the embeddings in {self.run.run_dir} were made by another checkpoint than {path}: "
                f"re-run `landmark-ae embed train_run={path.parent}` or query that embed run"
            )
        return sha256

    def _torch_encoder(self, path: Path, device: str, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
        """The checkpoint's model as embed ran it (torch imported here only)."""
        from landmark_ae.device import pick_device
        from landmark_ae.model.checkpoints import load_checkpoint, model_from_checkpoint
        from landmark_ae.retrieval.embed import embed_images

        self.device = pick_device(device)  # a device that cannot run the model: one line, before any work
        self.checkpoint_sha256 = self._check_checkpoint(path)
        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt).to(self.device).eval()
        # The size the embed run's encoder saw (input_size=); older runs record none: the trained size.
        input_size = int(self.run.meta.get("input_size") or ckpt["model_config"]["input_size"])
        pooling, gem_p = self.run.meta["pooling"], float(self.run.meta["gem_p"])
        return lambda images: embed_images(model, images, input_size, batch_size, self.device, pooling=pooling,
                                           gem_p=gem_p)

    @property
    def size(self) -> int:
        return len(self.rows)

    def load_image(self, source: bytes | Path | str) -> np.ndarray:
        """One query image (its bytes, or a path read by collection.read_image_file's rule: a regular
        file, byte-capped) through the training preprocessing (any mode, EXIF-rotated, resized)."""
        data = read_image_file(source) if isinstance(source, (str, Path)) else source
        image, _ = resized_rgb(data, self.image_size)
        return np.asarray(image, dtype=np.uint8)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) images -> the embed run's post-processed rows."""
        raw = self.encode(images)
        queries = self.transform.apply(raw)
        if queries.shape[1] != self.database.shape[1]:
            raise UserError(f"query embeddings have {queries.shape[1]} values but {self.run.run_dir} holds "
                            f"{self.database.shape[1]}: embed with the same model")
        return queries

    def neighbours(self, images: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        """For each image its k nearest database images, nearest first: rank, distance, id, landmark_id, path,
        class_name (None where the dataset names no classes). With the run's αQE (qe_k > 0) these are the
        neighbours (and distances) of the expanded query; with its diffusion (diffusion_k > 0), the rows
        in the diffusion's order, each with its distance to the query itself (so not sorted)."""
        if len(images) == 0:
            return []
        k = min(k, self.size)
        distances, positions = self.index.search(self.embed(images), k)
        out = []
        for dists, poss in zip(distances, positions, strict=True):
            hits = []
            for rank, (dist, pos) in enumerate(((d, p) for d, p in zip(dists, poss, strict=True) if p >= 0), start=1):
                row = int(self.rows[pos])
                label = int(self.run.labels[row])
                hits.append({"rank": rank, "distance": float(dist), "id": self.run.ids[row],
                             "landmark_id": label if label >= 0 else None, "path": self.run.paths[row],
                             "class_name": self.class_names.get(label) if label >= 0 else None})
            out.append(hits)
        return out


__all__ = ["ImageError", "Retriever"]
