"""Tests for landmark_ae.retrieval.search against a float64 brute force."""


import numpy as np
import pytest
from conftest import modules_loaded_by

from landmark_ae.retrieval.search import search


def brute_force(queries, database, k, exclude=None):
    """float64 reference: full distance matrix, stable sort => ties by index."""
    q = np.asarray(queries, dtype=np.float32).astype(np.float64)
    x = np.asarray(database, dtype=np.float32).astype(np.float64)
    d = np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    if exclude is not None:
        for row, e in enumerate(exclude):
            if e >= 0:
                d[row, e] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), order


def check(queries, database, k, **kw):
    dist, idx = search(queries, database, k, **kw)
    ref_d, ref_i = brute_force(queries, database, k, kw.get("exclude"))
    assert dist.shape == idx.shape == (len(queries), min(k, len(database)))
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=0)
    return dist, idx


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1024])
@pytest.mark.parametrize("db_chunk_size", [None, 1, 5, 17])
def test_matches_brute_force(chunk_size, db_chunk_size):
    rng = np.random.default_rng(0)
    db = rng.normal(size=(60, 8)).astype(np.float32)
    qs = rng.normal(size=(11, 8)).astype(np.float32)
    check(qs, db, 5, chunk_size=chunk_size, db_chunk_size=db_chunk_size)


@pytest.mark.parametrize("k", [1, 59, 60, 61, 1000])
def test_k_values_including_k_larger_than_n(k):
    rng = np.random.default_rng(1)
    db = rng.normal(size=(60, 4)).astype(np.float32)
    qs = rng.normal(size=(9, 4)).astype(np.float32)
    dist, idx = check(qs, db, k, chunk_size=4, db_chunk_size=13)
    assert dist.shape[1] == min(k, 60)
    if k >= 60:  # every database row appears exactly once per query
        assert (np.sort(idx, axis=1) == np.arange(60)).all()


def test_sorted_and_nonnegative():
    rng = np.random.default_rng(2)
    db = rng.normal(size=(200, 16)).astype(np.float32)
    dist, _ = search(db[:20], db, 10, chunk_size=6, db_chunk_size=32)
    assert (np.diff(dist, axis=1) >= 0).all()
    assert (dist >= 0).all()
    # Each query's nearest neighbour is itself at distance exactly 0.
    np.testing.assert_array_equal(dist[:, 0], 0.0)


def test_precision_with_large_offset():
    # Points far from the origin with tiny spread: the float32 expansion
    # ||q||^2 - 2q.d + ||d||^2 cancels catastrophically (||q||^2 ~ 1.6e7,
    # distances^2 ~ 1e-3); the float64 re-ranking must still be exact.
    rng = np.random.default_rng(3)
    db = (1000.0 + 0.01 * rng.normal(size=(300, 16))).astype(np.float32)
    qs = (1000.0 + 0.01 * rng.normal(size=(25, 16))).astype(np.float32)
    for dbc in (None, 7, 64):
        check(qs, db, 10, chunk_size=8, db_chunk_size=dbc)


def test_ties_broken_by_index():
    # 1-D: database values 1, -1, 1, 3, -1, 0.5 around query 0.
    # Distances: 1, 1, 1, 3, 1, 0.5 -> order 5 (0.5), then the four ties at 1
    # in index order 0, 1, 2, 4, then 3 (3.0).
    db = np.array([[1.0], [-1.0], [1.0], [3.0], [-1.0], [0.5]], dtype=np.float32)
    q = np.zeros((1, 1), dtype=np.float32)
    for dbc in (None, 1, 2, 4):
        dist, idx = search(q, db, 6, db_chunk_size=dbc)
        np.testing.assert_array_equal(idx, [[5, 0, 1, 2, 4, 3]])
        np.testing.assert_array_equal(dist, [[0.5, 1, 1, 1, 1, 3]])
        dist, idx = search(q, db, 3, db_chunk_size=dbc)
        np.testing.assert_array_equal(idx, [[5, 0, 1]])


def test_many_duplicates_across_blocks():
    # 40 identical rows (all tied) inside other points: the k lowest indices
    # of the tied group must win even when they are split over many blocks.
    rng = np.random.default_rng(4)
    db = rng.normal(size=(100, 3)).astype(np.float32) + 5.0
    dup = np.array([0.3, -0.2, 0.1], dtype=np.float32)
    tied = np.sort(rng.choice(100, size=40, replace=False))
    db[tied] = dup
    q = np.array([[0.31, -0.2, 0.1]], dtype=np.float32)
    for dbc in (None, 3, 10):
        _, idx = search(q, db, 7, db_chunk_size=dbc)
        np.testing.assert_array_equal(idx[0], tied[:7])


def test_exclude_self():
    rng = np.random.default_rng(5)
    db = rng.normal(size=(50, 6)).astype(np.float32)
    rows = np.array([0, 7, 49, 20, 3])
    exclude = np.array([0, 7, 49, -1, 3])  # -1: query 3 keeps itself
    for dbc in (None, 4, 16):
        _, idx = check(db[rows], db, 4, exclude=exclude, chunk_size=2, db_chunk_size=dbc)
        assert idx[3, 0] == 20
        for r, e in zip(idx, exclude, strict=True):
            assert e not in r or e == -1


def test_exclude_with_k_equal_n_pads_with_minus_one():
    db = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    dist, idx = search(db[:1], db, 5, exclude=np.array([0]))
    # k' = min(5, 3) = 3 but only 2 rows are left: last slot is (inf, -1).
    np.testing.assert_array_equal(idx, [[1, 2, -1]])
    np.testing.assert_array_equal(dist, [[1.0, 3.0, np.inf]])


def test_memmap_database(tmp_path):
    rng = np.random.default_rng(6)
    data = rng.normal(size=(80, 5)).astype(np.float32)
    path = tmp_path / "db.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=data.shape)
    mm[:] = data
    mm.flush()
    del mm
    db = np.memmap(path, dtype=np.float32, mode="r", shape=data.shape)
    qs = rng.normal(size=(10, 5)).astype(np.float32)
    check(qs, db, 6, chunk_size=3, db_chunk_size=9)


def test_float64_and_list_inputs():
    db = [[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]]
    dist, idx = search(np.array([[0.0, 0.0]]), db, 3)
    np.testing.assert_array_equal(idx, [[0, 2, 1]])
    np.testing.assert_allclose(dist, [[0.0, 1.0, 5.0]])  # 5 = sqrt(3^2 + 4^2)


def test_no_queries():
    dist, idx = search(np.zeros((0, 3), np.float32), np.ones((4, 3), np.float32), 2)
    assert dist.shape == idx.shape == (0, 2)


@pytest.mark.parametrize(
    "queries, database, k, kw",
    [
        (np.zeros((2, 3)), np.zeros((5, 3)), 0, {}),
        (np.zeros((2, 3)), np.zeros((5, 3)), -1, {}),
        (np.zeros((2, 3)), np.zeros((5, 4)), 1, {}),  # dimension mismatch
        (np.zeros((2, 3)), np.zeros((0, 3)), 1, {}),  # empty database
        (np.zeros(3), np.zeros((5, 3)), 1, {}),  # 1-D queries
        (np.zeros((2, 3)), np.zeros(5), 1, {}),  # 1-D database
        (np.zeros((2, 3)), np.zeros((5, 3)), 1, {"chunk_size": 0}),
        (np.zeros((2, 3)), np.zeros((5, 3)), 1, {"exclude": np.array([0])}),
        (np.zeros((2, 3)), np.zeros((5, 3)), 1, {"exclude": np.array([0, 5])}),
        (np.zeros((2, 3)), np.zeros((5, 3)), 1, {"exclude": np.array([0.0, 1.0])}),
    ],
)
def test_value_errors(queries, database, k, kw):
    with pytest.raises(ValueError):
        search(queries, database, k, **kw)


def test_import_is_light():
    assert modules_loaded_by("landmark_ae.retrieval.search") == set()
