"""Diffusion re-ranking on the database's nearest-neighbour graph (Iscen et al., CVPR 2017; the manifold
ranking of Zhou et al. 2004): label-free, on unit-length rows (embed l2=true).

    neighbour_graph(db, k, index)   S = D^-1/2 W D^-1/2: W the mutual k-nearest-neighbour graph of the
                                    database rows, weighted sim^3 (embed stores it: diffusion.npz)
    DiffusedIndex(base, db, S, ...) search(q, n): q's `query_k` nearest rows (the base index: the run's
                                    own, with its αQE) start the diffusion; rows are ranked by f,
                                    the solution of (I - alpha S) f = y, y those rows' sim^3 (conjugate
                                    gradient). The distances returned stay Euclidean (q to each row).

A photo of a landmark seen from an unusual side is far from most photos of it but near a few, which
are near others: the graph follows those chains where a plain or αQE search stops at the first ring.
Neighbours come from an Index (numpy exact or FAISS). scipy (a dependency of scikit-learn) is imported
only to build a graph or to diffuse several queries at once: a one-shot query of one image stays free
of it (StoredGraph).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from landmark_ae.retrieval.index import Index, ReRankedIndex

__all__ = ["DIFFUSION_FILE", "DiffusedIndex", "StoredGraph", "load_graph", "neighbour_graph", "save_graph", "solve"]

DIFFUSION_FILE = "diffusion.npz"
GAMMA = 3.0  # similarities cubed, as Iscen et al.: near neighbours weigh far more than the k-th
TOLERANCE = 1e-3  # conjugate gradient: stop when every column's residual is this share of its start
MAX_STEPS = 100
_CHUNK = 256  # queries diffused at once: (database rows, chunk) float32 per vector of the solver


def _weights(sims: np.ndarray) -> np.ndarray:
    return np.maximum(sims, 0.0).astype(np.float32) ** np.float32(GAMMA)


def neighbour_graph(db: np.ndarray, k: int, index: Index) -> Any:
    """The normalised mutual k-NN graph of the unit rows db (n, d), as a scipy CSR matrix (float32):
    an edge i-j where each is among the other's k nearest rows, weight max(sim, 0)^3, then
    D^-1/2 W D^-1/2 (D: the weights' row sums; a row without an edge keeps none)."""
    import scipy.sparse as sp

    db = np.asarray(db, dtype=np.float32)
    n = len(db)
    if n < 2 or k < 1:
        return sp.csr_matrix((n, n), dtype=np.float32)
    k = min(int(k), n - 1)
    _, positions = index.search(db, k, exclude=np.arange(n))
    rows = np.repeat(np.arange(n), k)
    cols = positions.ravel()
    keep = cols >= 0
    sims = np.einsum("nd,nd->n", db[rows[keep]], db[cols[keep]])
    w = sp.csr_matrix((_weights(sims), (rows[keep], cols[keep])), shape=(n, n))
    w = w.minimum(w.T).tocsr()  # mutual neighbours only: hubs do not pull every query to them
    w.eliminate_zeros()
    degree = np.asarray(w.sum(axis=1)).ravel()
    scale = sp.diags(np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-30)), 0.0).astype(np.float32))
    return (scale @ w @ scale).tocsr().astype(np.float32)


def solve(graph: Any, y: np.ndarray, alpha: float) -> np.ndarray:
    """f with (I - alpha graph) f = y for each column of y (n, m), by conjugate gradient on all
    columns at once (I - alpha S is symmetric positive definite for 0 <= alpha < 1)."""
    f = np.zeros_like(y, dtype=np.float32)
    r = np.asarray(y, dtype=np.float32).copy()
    p = r.copy()
    rs = (r * r).sum(axis=0)
    stop = (TOLERANCE**2) * rs
    for _ in range(MAX_STEPS):
        if (rs <= stop).all():
            break
        ap = p - alpha * (graph @ p)
        step = rs / np.maximum((p * ap).sum(axis=0), 1e-30)
        f += p * step
        r -= ap * step
        rs_next = (r * r).sum(axis=0)
        p = r + p * (rs_next / np.maximum(rs, 1e-30))
        rs = rs_next
    return f


def save_graph(graph: Any, path: Path) -> None:
    with open(path, "wb") as f:
        np.savez(f, data=graph.data, indices=graph.indices, indptr=graph.indptr, shape=np.array(graph.shape))


class StoredGraph:
    """A graph as diffusion.npz holds it (CSR arrays), ready for `graph @ p`. One column (a one-shot
    query) is multiplied in numpy, so such a query never imports scipy (0.2-0.3 s of its 1.2-1.9 s on 2 cores);
    blocks of columns (evaluate, serve's batches) go through scipy's sparse product, built once."""

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]):
        if (len(indptr) != shape[0] + 1 or indptr[0] != 0 or indptr[-1] != len(data) or len(indices) != len(data)
                or (np.diff(indptr) < 0).any()):
            raise ValueError("CSR arrays that do not fit together")
        if len(indices) and not 0 <= int(indices.min()) <= int(indices.max()) < shape[1]:
            raise ValueError("CSR column ids out of range")
        self.data, self.indices, self.indptr, self.shape = data, indices, indptr, shape
        self._nonempty = np.flatnonzero(np.diff(indptr) > 0)
        self._sparse: Any = None

    def __matmul__(self, p: np.ndarray) -> np.ndarray:
        if p.ndim == 2 and p.shape[1] == 1:
            out = np.zeros((self.shape[0], 1), dtype=np.result_type(self.data, p))
            if len(self._nonempty):  # each row's products summed over its slice of the CSR arrays
                products = self.data * p[self.indices, 0]
                out[self._nonempty, 0] = np.add.reduceat(products, self.indptr[self._nonempty])
            return out
        return self.scipy() @ p

    def scipy(self) -> Any:
        if self._sparse is None:
            import scipy.sparse as sp

            self._sparse = sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)
        return self._sparse


def load_graph(path: Path) -> StoredGraph:
    with np.load(path, allow_pickle=False) as z:
        return StoredGraph(z["data"], z["indices"], z["indptr"], tuple(int(s) for s in z["shape"]))


class DiffusedIndex(ReRankedIndex):
    """An Index ranking by diffusion over `graph` (neighbour_graph of `database`) from each query's
    query_k nearest rows under `base`. Rows the diffusion does not reach follow, in base's order."""

    def __init__(self, base: Index, database: np.ndarray, graph: Any, query_k: int, alpha: float):
        super().__init__(base, database)
        self.graph, self.query_k, self.alpha = graph, int(query_k), float(alpha)

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries, dtype=np.float32)
        if len(q) == 0 or self.query_k <= 0 or self.size == 0:
            return self.base.search(q, k, exclude=exclude)
        distances, positions = [], []
        for s in range(0, len(q), _CHUNK):
            excl = None if exclude is None else np.asarray(exclude)[s : s + _CHUNK]
            d, p = self._search(q[s : s + _CHUNK], k, excl)
            distances.append(d)
            positions.append(p)
        return np.concatenate(distances), np.concatenate(positions)

    def _search(self, q: np.ndarray, k: int, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n, m = self.size, len(q)
        dist, start = self.base.search(q, min(self.query_k, n), exclude=exclude)
        y = np.zeros((n, m), dtype=np.float32)
        found = start >= 0
        cols = np.broadcast_to(np.arange(m)[:, None], start.shape)
        y[start[found], cols[found]] = _weights(1.0 - np.square(dist[found]) / 2.0)  # unit rows: sim = 1 - d²/2
        f = solve(self.graph, y, self.alpha).T
        if exclude is not None:
            rows = np.flatnonzero(np.asarray(exclude) >= 0)
            f[rows, np.asarray(exclude)[rows]] = 0.0
        k_eff = min(int(k), n)
        top = np.argsort(-f, axis=1, kind="stable")[:, :k_eff]
        reached = np.take_along_axis(f, top, axis=1) > 0
        if not reached.all():  # unreached rows: after the reached ones, nearest first
            _, fill = self.base.search(q, k_eff, exclude=exclude)
            for i in np.flatnonzero(~reached.all(axis=1)):
                head = top[i][reached[i]]
                taken = set(head.tolist())
                rest = [j for j in fill[i] if j >= 0 and j not in taken]
                top[i] = np.concatenate([head, rest, np.full(k_eff, -1)])[:k_eff]
        return self._distances(q, top), top

    def _distances(self, q: np.ndarray, top: np.ndarray) -> np.ndarray:
        rows = np.asarray(self.database[np.maximum(top, 0).ravel()], dtype=np.float32).reshape(*top.shape, -1)
        d = np.sqrt(np.maximum(np.square(rows - q[:, None, :]).sum(axis=2), 0.0)).astype(np.float64)
        return np.where(top >= 0, d, np.inf)

