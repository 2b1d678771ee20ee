"""Exact k-nearest-neighbour search by Euclidean distance.

Kept dependency-light (numpy only) so that the ``query`` command starts fast.
"""

from __future__ import annotations

import numpy as np

__all__ = ["search"]

_EPS32 = float(np.finfo(np.float32).eps)
# Target number of float32 elements in one (query chunk x database chunk) block
# of approximate squared distances: 2**23 * 4 bytes = 32 MiB.
_BLOCK_ELEMENTS = 1 << 23
# Target number of float64 elements when recomputing exact distances of
# candidate pairs: 2**21 * 8 bytes = 16 MiB.
_PAIR_ELEMENTS = 1 << 21


def search(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    chunk_size: int = 1024,
    exclude: np.ndarray | None = None,
    db_chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of each query row in ``database`` (Euclidean).

    queries (q, d), database (n, d), both converted to float32 (the database may
    be a np.memmap; it is read ``db_chunk_size`` rows at a time). Returns
    ``(distances, indices)``, float64 and int64 arrays of shape (q, k') with
    k' = min(k, n), sorted by ascending distance, ties broken by ascending
    database index.

    Candidates are selected with one float32 matrix multiplication per block
    (||q||^2 - 2 q.d + ||d||^2) and ``argpartition``-style selection; every
    candidate's distance is then recomputed from the difference vector in
    float64, so returned distances are accurate even where the expansion
    cancels badly, and ties mean "equal in float64".

    exclude: optional (q,) int array giving one database index per query to
    leave out (-1 = none), for when the query is itself in the database. If
    that leaves a query with fewer than k' neighbours (k >= n), the missing
    trailing slots hold distance inf and index -1.
    """
    q_arr, database, excl, db_chunk_size = _checked_inputs(queries, database, k, chunk_size, exclude, db_chunk_size)
    n, n_q, kk = database.shape[0], q_arr.shape[0], min(int(k), database.shape[0])

    out_d = np.full((n_q, kk), np.inf, dtype=np.float64)
    out_i = np.full((n_q, kk), -1, dtype=np.int64)
    if n_q == 0:
        return out_d, out_i

    # Squared norms of database rows, once (float64 so they add no rounding of
    # their own beyond the final cast); max per chunk feeds the error bound.
    db_norms = np.empty(n, dtype=np.float64)
    for s in range(0, n, db_chunk_size):
        block = np.asarray(database[s : s + db_chunk_size], dtype=np.float64)
        db_norms[s : s + len(block)] = np.einsum("ij,ij->i", block, block)

    for qs in range(0, n_q, chunk_size):
        qe = min(qs + chunk_size, n_q)
        sl = slice(qs, qe)
        out_d[sl], out_i[sl] = _search_chunk(
            q_arr[sl],
            database,
            db_norms,
            kk,
            db_chunk_size,
            None if excl is None else excl[sl],
        )
    return out_d, out_i


def _checked_inputs(queries, database, k, chunk_size: int, exclude, db_chunk_size: int | None) -> tuple:
    """search()'s arguments checked and normalised: (float32 queries, 2-D database, int64 exclude or
    None, database rows read per block)."""
    q_arr = np.asarray(queries, dtype=np.float32)
    if q_arr.ndim != 2:
        raise ValueError(f"queries must be 2-D (q, d), got shape {q_arr.shape}")
    if getattr(database, "ndim", None) != 2:
        database = np.asarray(database)
        if database.ndim != 2:
            raise ValueError(f"database must be 2-D (n, d), got shape {database.shape}")
    n, d = database.shape
    if n == 0:
        raise ValueError("database is empty")
    if q_arr.shape[1] != d:
        raise ValueError(
            f"dimension mismatch: queries have {q_arr.shape[1]} columns, database {d}"
        )
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    n_q = q_arr.shape[0]
    kk = min(int(k), n)

    excl = None
    if exclude is not None:
        excl = np.asarray(exclude)
        if excl.shape != (n_q,) or not np.issubdtype(excl.dtype, np.integer):
            raise ValueError(f"exclude must be an integer array of shape ({n_q},)")
        excl = excl.astype(np.int64)
        if np.any((excl < -1) | (excl >= n)):
            raise ValueError(f"exclude entries must lie in [-1, {n})")

    if db_chunk_size is None:
        db_chunk_size = max(kk, _BLOCK_ELEMENTS // min(chunk_size, max(n_q, 1)))
    if db_chunk_size <= 0:
        raise ValueError(f"db_chunk_size must be positive, got {db_chunk_size}")

    return q_arr, database, excl, db_chunk_size


def _search_chunk(
    q: np.ndarray,
    database: np.ndarray,
    db_norms: np.ndarray,
    kk: int,
    db_chunk_size: int,
    excl: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of one chunk of queries, merging database blocks."""
    nq, d = q.shape
    n = database.shape[0]
    q64 = q.astype(np.float64)
    q_norms = np.einsum("ij,ij->i", q64, q64)
    q_norms32 = q_norms.astype(np.float32)
    # Running best: exact squared distances (float64) and database indices.
    best_d2 = np.full((nq, kk), np.inf)
    best_i = np.full((nq, kk), -1, dtype=np.int64)
    rows_all = np.arange(nq)

    for s in range(0, n, db_chunk_size):
        block = np.asarray(database[s : s + db_chunk_size], dtype=np.float32)
        nb = block.shape[0]
        bn = db_norms[s : s + nb]
        approx = q @ block.T
        approx *= -2.0
        approx += q_norms32[:, None]
        approx += bn.astype(np.float32)[None, :]
        if excl is not None:
            hit = (excl >= s) & (excl < s + nb)
            approx[rows_all[hit], excl[hit] - s] = np.inf

        # Rounding bound on the float32 expansion: the dot product of length d
        # errs by at most ~d*eps*|q||x| <= d*eps*(|q|^2+|x|^2)/2, the rest by a
        # few eps. Any point that could belong to the exact top k has
        # approx <= (k-th smallest approx of this block) + 2*tol and
        # approx <= (current exact k-th best) + tol; keeping everything up to
        # min(both k-ths) + 2*tol is therefore safe, and the float64 re-rank
        # below drops the extras.
        tol = (d + 4) * _EPS32 * (q_norms + bn.max())
        kb = min(kk, nb)
        kth = np.partition(approx, kb - 1, axis=1)[:, kb - 1].astype(np.float64)
        thresh = np.minimum(kth, best_d2[:, -1]) + 2.0 * tol
        mask = approx <= thresh[:, None].astype(np.float32)
        # inf (excluded) entries can pass when thresh is inf: drop them.
        mask &= np.isfinite(approx)
        del approx
        r, c = np.nonzero(mask)
        del mask
        if r.size == 0:
            continue
        cand_d2 = _pair_sq_dists(q64, block, r, c)

        _merge_candidates(best_d2, best_i, r, c + s, cand_d2)

    return np.sqrt(np.maximum(best_d2, 0.0)), best_i


def _merge_candidates(best_d2: np.ndarray, best_i: np.ndarray, r: np.ndarray, idx: np.ndarray,
                      cand_d2: np.ndarray) -> None:
    """Merge a block's candidates (query row r, database index idx, exact d2) into the running best,
    in place, only for rows that got candidates (after the first blocks most rows get none); order by
    (row, d2, index)."""
    kk = best_d2.shape[1]
    ur, r_loc = np.unique(r, return_inverse=True)
    m = ur.size
    all_r = np.concatenate([np.repeat(np.arange(m), kk), r_loc.ravel()])
    all_d2 = np.concatenate([best_d2[ur].ravel(), cand_d2])
    all_i = np.concatenate([best_i[ur].ravel(), idx.astype(np.int64)])
    # Unfilled slots (index -1, d2 inf) must sort after real entries at inf.
    tiekey = np.where(all_i < 0, np.iinfo(np.int64).max, all_i)
    order = np.lexsort((tiekey, all_d2, all_r))
    sr = all_r[order]
    starts = np.searchsorted(sr, np.arange(m))
    rank = np.arange(sr.size) - starts[sr]
    keep = order[rank < kk]
    # Each row has >= kk entries (its old best), so keep is row-major (m*kk).
    best_d2[ur] = all_d2[keep].reshape(m, kk)
    best_i[ur] = all_i[keep].reshape(m, kk)


def _pair_sq_dists(q64: np.ndarray, block: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared distances of pairs (q64[r], block[c]) from differences, in float64."""
    d = q64.shape[1]
    step = max(1, _PAIR_ELEMENTS // max(d, 1))
    out = np.empty(r.size, dtype=np.float64)
    for s in range(0, r.size, step):
        diff = q64[r[s : s + step]] - block[c[s : s + step]].astype(np.float64)
        out[s : s + step] = np.einsum("ij,ij->i", diff, diff)
    return out
