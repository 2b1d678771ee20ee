"""Reading an embed run: memory-mapped embeddings, the index, how they were made, and the protocol's
query/database rows. Kept to numpy (no pandas, sklearn or torch): `query` reads it on its fast path.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from landmark_ae.errors import UserError
from landmark_ae.retrieval.index import Index, load_index
from landmark_ae.retrieval.postprocess import Transform
from landmark_ae.runs import check_artifacts, read_json, read_run_record, resolve_run

INDEX_COLUMNS = ["id", "landmark_id", "split", "path"]
ARTIFACTS = ("embeddings.npy", "index.csv", "embed.json")  # and transform.npz, where used
REMAKE = "re-run `landmark-ae embed`"
UNLABELLED = -1  # the label of a row without one (index.csv: an empty landmark_id)
# What embed.json must hold for query/evaluate to use the run (embed writes all of them).
META_KEYS = ("train_run", "checkpoint", "checkpoint_sha256", "model", "model_config", "data", "data_dir",
             "image_size", "dim", "raw_dim", "pooling", "gem_p", "l2", "pca_whiten", "transform")


class EmbedRun:
    """An embed run: memory-mapped embeddings, the index, and how they were made."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        for name in ARTIFACTS:
            if not (self.run_dir / name).is_file():
                raise UserError(f"{self.run_dir} is not a complete embed run ({name} missing): run `landmark-ae embed`")
        needed = [*ARTIFACTS, *(["transform.npz"] if (self.run_dir / "transform.npz").is_file() else [])]
        check_artifacts(self.run_dir, needed, REMAKE)
        try:
            self.meta = read_json(self.run_dir / "embed.json")
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.run_dir / 'embed.json'} is damaged ({type(exc).__name__}): "
                            "re-run `landmark-ae embed`") from None
        missing = [k for k in META_KEYS if not isinstance(self.meta, dict) or k not in self.meta]
        if missing:
            raise UserError(f"{self.run_dir / 'embed.json'} lacks {', '.join(missing)} (damaged, or made by an older "
                            "landmark-ae): re-run `landmark-ae embed`")
        try:
            self.embeddings = np.load(self.run_dir / "embeddings.npy", mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UserError(f"{self.run_dir / 'embeddings.npy'} is damaged ({str(exc).splitlines()[0]}): "
                            "re-run `landmark-ae embed`") from None
        with open(self.run_dir / "index.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[1:]
        for line, r in enumerate(rows, start=2):
            # landmark_id is empty for an unlabelled collection (embed images=...)
            if len(r) != len(INDEX_COLUMNS) or not (r[1] == "" or r[1].lstrip("-").isdigit()):
                raise UserError(f"{self.run_dir / 'index.csv'} is damaged (line {line}: {','.join(r)[:60]!r}): "
                                "re-run `landmark-ae embed`")
        self.ids = [r[0] for r in rows]
        self.labels = np.array([int(r[1]) if r[1] else UNLABELLED for r in rows], dtype=np.int64)
        self.splits = np.array([r[2] for r in rows])
        self.paths = [r[3] for r in rows]
        if len(rows) != len(self.embeddings):
            raise UserError(f"{self.run_dir}: index.csv and embeddings.npy disagree: re-run `landmark-ae embed`")

    @property
    def labelled(self) -> bool:
        """Whether every row has a landmark label: a prepared dataset, not an images= collection."""
        return not self.meta.get("images") and bool((self.labels != UNLABELLED).all())

    def transform(self) -> Transform:
        """The post-processing the stored rows went through; query applies it to its images too."""
        path = self.run_dir / self.meta["transform"]
        if not path.is_file():
            if self.meta["l2"] or self.meta["pca_whiten"]:  # never a silent fallback to raw embeddings
                raise UserError(f"{path} is missing, but embed.json says the rows were post-processed "
                                f"(l2={self.meta['l2']}, pca_whiten={self.meta['pca_whiten']}): re-run `landmark-ae embed`")
            return Transform()
        try:
            return Transform.load(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise UserError(f"{path} is damaged ({type(exc).__name__}): re-run `landmark-ae embed`") from None

    def rows(self, *splits: str) -> np.ndarray:
        return np.flatnonzero(np.isin(self.splits, splits))

    def database(self) -> np.ndarray:
        """The rows queries search: train+val of a prepared dataset, or every row of an embedded
        collection (split `database`)."""
        return self.rows("train", "val", "database")

    def database_rows(self) -> np.ndarray:
        """The database rows' embeddings: a memory-mapped slice when they are contiguous, else a copy."""
        rows = self.database()
        if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):
            return self.embeddings[int(rows[0]) : int(rows[-1]) + 1]
        return np.asarray(self.embeddings[rows])

    @property
    def index_name(self) -> str:
        """The database search embed stored: exact (numpy), flat, ivf or hnsw (FAISS, index.faiss)."""
        return str((self.meta.get("index") or {}).get("name", "exact"))

    def index(self, database: np.ndarray | None = None) -> Index:
        """The stored search over database() rows (`database`: those rows, when already loaded)."""
        return load_index(self.run_dir, self.meta, self.database_rows() if database is None else database)

    def protocol(self, queries: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(clustering rows, query rows, database rows). queries=test: test images query train+val
        (the seed's protocol, for reporting); queries=val: val images query train (for choosing
        settings without looking at the test set). Clustering is on train either way."""
        train = self.rows("train")
        if queries == "val":
            return train, self.rows("val"), train
        return train, self.rows("test"), self.rows("train", "val")


def resolve_embed_run(given: str | None, output_dir: str) -> EmbedRun:
    run = resolve_run(given, output_dir, "embed", "embed_run",
                      "run `landmark-ae embed` first, or pass embed_run=<embed run dir>")
    record = read_run_record(run)
    if record is not None and record.get("status") != "complete":
        raise UserError(f"{run} is an unfinished embed run: run `landmark-ae embed` again")
    return EmbedRun(run)
