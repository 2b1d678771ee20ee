"""A loaded embed run ready to answer queries: the checkpoint that made it, its post-processing and
its database rows, loaded once. `query` uses one per call, `serve` one per process.

Kept off pandas, sklearn and torchvision: it is on the query and serve start-up paths.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from landmark_ae.data.images import ImageError, resized_rgb
from landmark_ae.device import pick_device
from landmark_ae.errors import UserError
from landmark_ae.model.checkpoints import fingerprint, load_checkpoint, model_from_checkpoint
from landmark_ae.retrieval.collection import read_image_file
from landmark_ae.retrieval.embed import embed_images
from landmark_ae.retrieval.embed_run import EmbedRun

log = logging.getLogger(__name__)


class Retriever:
    """Embeds query images the way the embed run embedded its database, and ranks that database."""

    def __init__(self, run: EmbedRun, checkpoint: str | Path | None = None, device: str = "cpu", batch_size: int = 64):
        self.run = run
        self.device = pick_device(device)  # a device that cannot run the model: one line, before any work
        path = Path(checkpoint or run.meta["checkpoint"]).expanduser()
        if not path.is_file():
            raise UserError(f"checkpoint {path} not found: pass checkpoint=<best.pt> or re-run `landmark-ae embed`")
        self.checkpoint_sha256 = fingerprint(path)
        if self.checkpoint_sha256 != run.meta["checkpoint_sha256"]:
            raise UserError(
                f"the embeddings in {run.run_dir} were made by another checkpoint than {path}: "
                f"re-run `landmark-ae embed train_run={path.parent}` or query that embed run"
            )
        ckpt = load_checkpoint(path)
        self.model = model_from_checkpoint(ckpt).to(self.device).eval()
        # The size the embed run's encoder saw (input_size=); older runs record none: the trained size.
        self.input_size = int(run.meta.get("input_size") or ckpt["model_config"]["input_size"])
        self.image_size = int(run.meta["image_size"])
        self.batch_size = batch_size
        self.transform = run.transform()  # the embed run's L2 / PCA-whitening, fitted on its database
        self.rows = run.database()
        if len(self.rows) == 0:
            raise UserError(f"{run.run_dir} has no database images to search")
        self.database = run.database_rows()  # memory-mapped: database.npy after DBA, or a slice of the embeddings
        self.index = run.index(self.database)  # exact (numpy) or the stored index.faiss; with the run's αQE on top
        self.index_name = self.index.name
        self.class_names = run.class_names  # landmark_id -> name, shown beside it in every answer

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
        raw = embed_images(self.model, images, self.input_size, self.batch_size, self.device,
                           pooling=self.run.meta["pooling"], gem_p=float(self.run.meta["gem_p"]))
        queries = self.transform.apply(raw)
        if queries.shape[1] != self.database.shape[1]:
            raise UserError(f"query embeddings have {queries.shape[1]} values but {self.run.run_dir} holds "
                            f"{self.database.shape[1]}: embed with the same model")
        return queries

    def neighbours(self, images: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        """For each image its k nearest database images, nearest first: rank, distance, id, landmark_id, path,
        class_name (None where the dataset names no classes). With the run's αQE (qe_k > 0) these are the
        neighbours (and distances) of the expanded query."""
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
