"""Label-free retrieval post-processing on unit-length rows (embed l2=true): database-side
augmentation (DBA) and alpha-query expansion (αQE), as in landmark retrieval (Radenović et al.).

    dba(x, k, alpha, index)            each database row -> the weighted mean of itself and its k
                                       nearest other database rows, then L2 (embed, on the database)
    ExpandedIndex(index, db, k, alpha) an Index whose search(q, n) first finds q's top k, replaces q by
                                       the weighted mean of q and those k rows, L2, and searches again
                                       (query, serve and evaluate)

Weights: sim^alpha, sim the inner product (cosine) of the two unit rows clamped at 0; a row's own
weight is 1 (its similarity with itself). alpha=0 is the plain mean. Neighbours come from an Index
(retrieval/index.py: numpy exact or FAISS), never from a search of our own. Kept to numpy: `query`
imports it on its fast path.
"""

from __future__ import annotations

import numpy as np

from landmark_ae.retrieval.index import Index, ReRankedIndex

__all__ = ["ExpandedIndex", "dba", "expand"]

_CHUNK = 1024  # rows per block: (chunk, k, d) neighbour vectors at a time


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def expand(rows: np.ndarray, database: np.ndarray, positions: np.ndarray, alpha: float) -> np.ndarray:
    """Each row i replaced by L2(rows[i] + sum_j max(sim_ij, 0)^alpha * database[positions[i, j]]),
    sim_ij = rows[i] . database[positions[i, j]]; positions -1 (none found) are skipped. float32."""
    rows = np.asarray(rows, dtype=np.float32)
    positions = np.asarray(positions, dtype=np.int64)
    out = np.empty_like(rows)
    for s in range(0, len(rows), _CHUNK):
        r, p = rows[s : s + _CHUNK], positions[s : s + _CHUNK]
        valid = p >= 0
        nb = np.asarray(database[np.where(valid, p, 0).ravel()], dtype=np.float32).reshape(*p.shape, -1)
        sims = np.einsum("md,mkd->mk", r, nb)
        weights = np.where(valid, np.maximum(sims, 0.0) ** np.float32(alpha), 0.0).astype(np.float32)
        out[s : s + _CHUNK] = r + np.einsum("mk,mkd->md", weights, nb)
    return np.ascontiguousarray(_l2(out), dtype=np.float32)


def dba(x: np.ndarray, k: int, alpha: float, index: Index) -> np.ndarray:
    """Database-side augmentation of the unit rows x (n, d): each row becomes the sim^alpha-weighted
    mean of itself and its k nearest other rows (found with `index`, an Index over these very rows),
    then L2. Every row is augmented from the rows as they were (not in place). k = 0: x unchanged."""
    x = np.asarray(x, dtype=np.float32)
    if k <= 0 or len(x) < 2:
        return np.ascontiguousarray(x)
    _, positions = index.search(x, min(int(k), len(x) - 1), exclude=np.arange(len(x)))
    return expand(x, x, positions, alpha)


class ExpandedIndex(ReRankedIndex):
    """αQE over another Index: search(q, n) searches the top k of q, expands q with them (`expand`)
    and returns the base index's n nearest rows of the expanded query (its Euclidean distances).
    exclude applies to both searches (a query that is itself a database row is not expanded with it)."""

    def __init__(self, base: Index, database: np.ndarray, k: int, alpha: float):
        super().__init__(base, database)
        self.k, self.alpha = int(k), float(alpha)

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries, dtype=np.float32)
        if len(q) == 0 or self.k <= 0:
            return self.base.search(q, k, exclude=exclude)
        _, top = self.base.search(q, min(self.k, self.size), exclude=exclude)
        return self.base.search(expand(q, self.database, top, self.alpha), k, exclude=exclude)
