"""The database search of an embed run, behind one small interface (conf/index/*.yaml):

    build(x, cfg, l2)          -> Index over the database rows x (index settings: name, nlist, ...)
    Index.search(queries, k[, exclude])
                               -> (distances, positions): Euclidean, ascending, float64 / int64,
                                  k clamped to the database size (retrieval/search.search's contract);
                                  exclude: one database position per query left out (the query itself)
    Index.save(run_dir)        -> the files written (index.faiss for the FAISS backends, none for exact)
    load_index(run_dir, meta, database) -> the Index an embed run stored (embed.json's `index`)

exact: numpy (retrieval/search.py), the oracle, nothing stored. flat: FAISS IndexFlat. ivf: FAISS
IVF-Flat (nlist k-means cells, nprobe searched). hnsw: FAISS HNSW graph (M, efConstruction,
efSearch). On L2-normalised rows (embed l2=true) the FAISS backends use inner product and report
sqrt(max(2 - 2 ip, 0)), the Euclidean distance of unit vectors, so every backend reports the same
distance. faiss is imported only inside the FAISS backends: `query` and `serve` start without it
for `exact`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from landmark_ae.config import enum_value
from landmark_ae.errors import UserError
from landmark_ae.retrieval.search import search as exact_search
from landmark_ae.runs import atomic_path, check_artifacts

__all__ = ["INDEX_FILE", "KINDS", "Index", "build", "drop_excluded", "load_index", "ivf_nlist"]

INDEX_FILE = "index.faiss"
KINDS = ("exact", "flat", "ivf", "hnsw")
REMAKE = "re-run `landmark-ae embed`"
# Settings that matter per backend (the rest of IndexConfig is recorded but unused).
_USED = {"exact": (), "flat": (), "ivf": ("nlist", "nprobe", "seed"), "hnsw": ("M", "efConstruction", "efSearch")}


def _setting(cfg: Any, key: str, default: Any) -> Any:
    value = cfg.get(key, default) if isinstance(cfg, Mapping) or hasattr(cfg, "get") else getattr(cfg, key, default)
    return enum_value(value)  # an enum member (IndexKind.ivf) as its value


def ivf_nlist(n: int, nlist: int) -> int:
    """The cells an IVF index over n rows gets: at most the asked nlist and n / 39 (FAISS wants 39
    training points per cell), at least 1, so small databases still work."""
    return max(1, min(int(nlist), n // 39))


class Index:
    """A searchable database: `search(queries, k)` as retrieval/search.search answers it."""

    name = "exact"

    def __init__(self, database: np.ndarray, settings: dict[str, Any] | None = None):
        self.database = database
        self.settings = {"name": "exact", **(settings or {})}

    @property
    def size(self) -> int:
        return int(self.database.shape[0])

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """exclude: one database position per query to leave out (-1: none), e.g. the query itself
        where it is in the database; a query left with fewer than k results is padded (inf, -1)."""
        return exact_search(queries, self.database, k, exclude=exclude)

    def save(self, run_dir: Path) -> list[str]:
        return []


class ReRankedIndex(Index):
    """An Index that re-ranks another's results (αQE in expansion.py, diffusion in diffusion.py): its
    name, settings, size and saved files are the base index's."""

    def __init__(self, base: Index, database: np.ndarray):
        self.base, self.database = base, database
        self.name = base.name
        self.settings = base.settings

    @property
    def size(self) -> int:
        return self.base.size

    def save(self, run_dir: Path) -> list[str]:
        return self.base.save(run_dir)


class FaissIndex(Index):
    """A FAISS index; inner product on unit rows (`ip`), squared L2 otherwise."""

    def __init__(self, name: str, index: Any, ip: bool, settings: dict[str, Any]):
        self.name, self.index, self.ip = name, index, ip
        self.settings = settings

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.index.d:
            raise ValueError(f"queries must be (q, {self.index.d}), got shape {q.shape}")
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        kk = min(int(k), self.size)
        if len(q) == 0:
            return np.zeros((0, kk)), np.zeros((0, kk), dtype=np.int64)
        if exclude is not None:  # one more, then the excluded position (or the last) dropped
            distances, positions = self.search(q, min(kk + 1, self.size))
            return drop_excluded(distances, positions, exclude, kk)
        scores, positions = self.index.search(q, kk)
        scores = scores.astype(np.float64)
        d2 = 2.0 - 2.0 * scores if self.ip else scores
        distances = np.sqrt(np.maximum(d2, 0.0))
        positions = positions.astype(np.int64)
        missing = positions < 0  # an approximate index may find fewer than k (few cells probed)
        distances[missing] = np.inf
        return distances, positions

    def save(self, run_dir: Path) -> list[str]:
        import faiss

        with atomic_path(Path(run_dir) / INDEX_FILE) as tmp:
            faiss.write_index(self.index, str(tmp))
        return [INDEX_FILE]


def drop_excluded(distances: np.ndarray, positions: np.ndarray, exclude: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k results of each row without its `exclude` position (-1: none; where it is not
    among the results, the last one is dropped); rows short of k are padded with (inf, -1)."""
    exclude = np.asarray(exclude, dtype=np.int64)
    if exclude.shape != (len(positions),):
        raise ValueError(f"exclude must hold one position per query ({len(positions)}), not shape {exclude.shape}")
    keep = positions != exclude[:, None]
    keep &= np.cumsum(keep, axis=1) <= k  # the first k kept entries of each row
    out_d = np.full((len(positions), k), np.inf)
    out_i = np.full((len(positions), k), -1, dtype=np.int64)
    rows, cols = np.nonzero(keep)
    slots = np.cumsum(keep, axis=1)[rows, cols] - 1
    out_d[rows, slots] = distances[rows, cols]
    out_i[rows, slots] = positions[rows, cols]
    return out_d, out_i


def build(x: np.ndarray, cfg: Any, l2: bool) -> Index:
    """An index over the rows x (n, d) with the settings cfg (IndexConfig or a dict); l2: the rows
    are unit length (inner product then ranks as Euclidean distance does)."""
    name = str(_setting(cfg, "name", "exact"))
    if name not in KINDS:
        raise UserError(f"index.name={name} is not an index: choose one of {', '.join(KINDS)}")
    if name == "exact":
        return Index(x)
    import faiss

    xs = np.ascontiguousarray(x, dtype=np.float32)
    n, d = xs.shape
    if n == 0:
        raise UserError("there are no database rows to index")
    metric = faiss.METRIC_INNER_PRODUCT if l2 else faiss.METRIC_L2
    settings: dict[str, Any] = {"name": name, "metric": "ip" if l2 else "l2"}
    settings.update({key: int(_setting(cfg, key, 0)) for key in _USED[name]})
    if name == "flat":
        index = faiss.IndexFlatIP(d) if l2 else faiss.IndexFlatL2(d)
    elif name == "ivf":
        nlist = ivf_nlist(n, settings["nlist"])
        quantizer = faiss.IndexFlatIP(d) if l2 else faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, metric)
        index.cp.seed = settings["seed"]
        # Train on a seeded sample of at most 256 rows per cell (FAISS would subsample anyway).
        sample = xs
        if n > 256 * nlist:
            rows = np.sort(np.random.default_rng(settings["seed"]).choice(n, 256 * nlist, replace=False))
            sample = xs[rows]
        index.train(sample)
        index.nprobe = min(settings["nprobe"], nlist)
        settings.update(nlist_used=nlist, nprobe_used=int(index.nprobe))
    else:
        index = faiss.IndexHNSWFlat(d, settings["M"], metric)
        index.hnsw.efConstruction = settings["efConstruction"]
        index.hnsw.efSearch = settings["efSearch"]
    index.add(xs)
    return FaissIndex(name, index, l2, settings)


def load_index(run_dir: Path, meta: dict[str, Any], database: np.ndarray) -> Index:
    """The index an embed run stored (embed.json's `index`; runs without one search exactly).
    database: the run's database rows, which an exact index searches and a stored one must match."""
    settings = meta.get("index") or {"name": "exact"}
    name = settings.get("name", "exact") if isinstance(settings, dict) else None
    if name not in KINDS:
        raise UserError(f"{Path(run_dir) / 'embed.json'} names an unknown index {name!r}: {REMAKE}")
    if name == "exact":
        return Index(database)
    path = Path(run_dir) / settings.get("file", INDEX_FILE)
    check_artifacts(Path(run_dir), [path.name], REMAKE)  # missing, or changed since embed wrote it
    import faiss

    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1][:100] if str(exc).strip() else "unreadable"
        raise UserError(f"{path} is damaged ({detail}): {REMAKE}") from None
    if index.ntotal != len(database) or index.d != database.shape[1]:
        raise UserError(f"{path} holds {index.ntotal} rows of {index.d} values but the run's database has "
                        f"{len(database)} of {database.shape[1]}: {REMAKE}")
    if name == "ivf":
        faiss.extract_index_ivf(index).nprobe = int(settings.get("nprobe_used", settings.get("nprobe", 1)))
    elif name == "hnsw":
        index.hnsw.efSearch = int(settings.get("efSearch", index.hnsw.efSearch))
    return FaissIndex(name, index, settings.get("metric") == "ip", settings)
