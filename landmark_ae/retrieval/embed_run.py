"""Reading an embed run: memory-mapped embeddings, the index, how they were made, and the protocol's
query/database rows. Kept to numpy (no pandas, sklearn or torch): `query` reads it on its fast path.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import zipfile
from pathlib import Path

import numpy as np

from landmark_ae.config import EmbedSettings
from landmark_ae.data.classes import class_names
from landmark_ae.errors import UserError
from landmark_ae.retrieval.diffusion import DIFFUSION_FILE, DiffusedIndex, load_graph, neighbour_graph
from landmark_ae.retrieval.expansion import ExpandedIndex, dba
from landmark_ae.retrieval.index import Index, build, load_index
from landmark_ae.retrieval.postprocess import Transform
from landmark_ae.runs import Run, check_artifacts, read_json

INDEX_COLUMNS = ["id", "landmark_id", "split", "path"]
ARTIFACTS = ("embeddings.npy", "index.csv", "embed.json")  # and transform.npz, database.npy, diffusion.npz, where used
DATABASE_FILE = "database.npy"  # dba_k > 0: the database rows after DBA, as searched
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
        optional = ("transform.npz", DATABASE_FILE, DIFFUSION_FILE)
        needed = [*ARTIFACTS, *(name for name in optional if (self.run_dir / name).is_file())]
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

    @functools.cached_property
    def class_names(self) -> dict[int, str]:
        """landmark_id -> class name, from the embedded prepare run (data/classes.py); {} for none."""
        return class_names(self.meta.get("data_dir")) if not self.meta.get("images") else {}

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

    @property
    def dba_k(self) -> int:
        return int(self.meta.get("dba_k") or 0)  # runs older than DBA: none

    @property
    def qe_k(self) -> int:
        return int(self.meta.get("qe_k") or 0)

    def database_rows(self) -> np.ndarray:
        """The database rows as searched: database.npy (memory-mapped) after DBA; otherwise the
        embeddings' database rows, a memory-mapped slice when they are contiguous, else a copy."""
        rows = self.database()
        if self.dba_k:
            path = self.run_dir / DATABASE_FILE
            try:
                database = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise UserError(f"{path} is missing or damaged ({str(exc).splitlines()[0]}), but embed.json says the "
                                f"database went through DBA (dba_k={self.dba_k}): {REMAKE}") from None
            if database.shape != (len(rows), self.embeddings.shape[1]):
                raise UserError(f"{path} holds {database.shape} values but the run has {len(rows)} database rows of "
                                f"{self.embeddings.shape[1]}: {REMAKE}")
            return database
        if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):
            return self.embeddings[int(rows[0]) : int(rows[-1]) + 1]
        return np.asarray(self.embeddings[rows])

    def augment(self, rows: np.ndarray) -> np.ndarray:
        """The index rows `rows` as this run's database: the stored database.npy where `rows` are the
        run's own database, else DBA recomputed over them with the run's dba_k/dba_alpha (evaluate's
        other protocols: val vs train, all vs all); the embeddings themselves without DBA."""
        if np.array_equal(rows, self.database()):
            return np.asarray(self.database_rows())
        base = np.asarray(self.embeddings[rows], dtype=np.float32)
        if not self.dba_k:
            return base
        return dba(base, self.dba_k, float(self.meta.get("dba_alpha", 3.0)), build(base, self.meta.get("index") or {}, l2=True))

    def expand(self, index: Index, database: np.ndarray) -> Index:
        """index with the run's αQE on top (qe_k > 0), else index itself."""
        if not self.qe_k:
            return index
        return ExpandedIndex(index, database, self.qe_k, float(self.meta.get("qe_alpha", 3.0)))

    @property
    def diffusion_k(self) -> int:
        return int(self.meta.get("diffusion_k") or 0)  # runs older than diffusion: none

    def diffuse(self, index: Index, database: np.ndarray, stored: bool = True) -> Index:
        """index ranked by the run's diffusion (diffusion_k > 0), else index itself: over the stored graph
        when `database` is the run's own database as searched (stored), else a graph built over it."""
        if not self.diffusion_k:
            return index
        if stored:
            path = self.run_dir / DIFFUSION_FILE
            try:
                graph = load_graph(path)
            except (ValueError, OSError, KeyError) as exc:
                raise UserError(f"{path} is missing or damaged ({type(exc).__name__}), but embed.json says the run "
                                f"diffuses (diffusion_k={self.diffusion_k}): {REMAKE}") from None
            if graph.shape != (len(database), len(database)):
                raise UserError(f"{path} is a graph of {graph.shape[0]} rows but the run has {len(database)} "
                                f"database rows: {REMAKE}")
        else:
            graph = neighbour_graph(database, self.diffusion_k, build(database, self.meta.get("index") or {}, l2=True))
        return DiffusedIndex(index, database, graph, int(self.meta.get("diffusion_query_k") or 10),
                             float(self.meta.get("diffusion_alpha", 0.99)))

    @property
    def index_name(self) -> str:
        """The database search embed stored: exact (numpy), flat, ivf or hnsw (FAISS, index.faiss)."""
        return str((self.meta.get("index") or {}).get("name", "exact"))

    def index(self, database: np.ndarray | None = None, expand: bool = True) -> Index:
        """The stored search over database_rows() (`database`: those rows, when already loaded), with
        the run's αQE and diffusion on top unless expand=False: what query and serve search."""
        database = self.database_rows() if database is None else database
        index = load_index(self.run_dir, self.meta, database)
        return self.diffuse(self.expand(index, database), database) if expand else index

    def protocol(self, queries: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(clustering rows, query rows, database rows). queries=test: test images query train+val
        (the seed's protocol, for reporting); queries=val: val images query train (for choosing
        settings without looking at the test set); clustering on train for both. queries=all: every
        row queries all rows (evaluate leaves the query itself out) and clustering is on all of them."""
        if queries == "all":
            every = np.arange(len(self.ids))
            return every, every, every
        train = self.rows("train")
        if queries == "val":
            return train, self.rows("val"), train
        return train, self.rows("test"), self.rows("train", "val")


def resolve_embed_run(given: str | None, output_dir: str) -> EmbedRun:
    run = Run.resolve(given, output_dir, "embed", "embed_run",
                      "run `landmark-ae embed` first, or pass embed_run=<embed run dir>")
    if run.record is not None and run.record.get("status") != "complete":
        raise UserError(f"{run.path} is an unfinished embed run: run `landmark-ae embed` again")
    return EmbedRun(run.path)


# The post-processing keys: embed.json records them, a train run's eval_embed carries them.
EMBED_SETTINGS = tuple(f.name for f in dataclasses.fields(EmbedSettings))


def train_run_embed_settings(train_run: Path) -> dict:
    """The embed settings a train run carries: run.json's "embed" where it records one, else its
    composed config's `eval_embed` (runs.Run.load_config); {} when it has neither (older runs, copies).
    Only EMBED_SETTINGS keys, as plain values."""
    run = Run(train_run)
    settings = (run.record or {}).get("embed")
    if not isinstance(settings, dict):
        try:
            cfg = run.load_config() or {}
        except UserError as exc:  # a damaged record: say so rather than embed with other settings
            raise UserError(f"{exc} (or pass the embed settings on the command line)") from None
        settings = cfg.get("eval_embed") if isinstance(cfg.get("eval_embed"), dict) else {}
    return {key: settings[key] for key in EMBED_SETTINGS if key in settings}
