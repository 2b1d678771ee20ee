"""Diffusion re-ranking (landmark_ae/retrieval/diffusion.py) against hand-computed graphs and a dense
solve (embed storing its graph, query and evaluate applying it: test_expansion.py, beside DBA and αQE,
whose trained fixture it shares)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from test_expansion import unit

from landmark_ae.retrieval.diffusion import DiffusedIndex, load_graph, neighbour_graph, save_graph, solve
from landmark_ae.retrieval.index import Index


def test_neighbour_graph_by_hand():
    # Two tight pairs far apart: with k=1 each row's nearest is its partner, both ways (mutual).
    db = unit(0, 10, 90, 100)
    s = neighbour_graph(db, 1, Index(db)).toarray()
    # W: 0-1 and 2-3 weighted cos(10°)^3; each degree is that weight, so D^-1/2 W D^-1/2 = 1 on each edge
    assert np.allclose(s, [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], atol=1e-6)
    # k=2: 0's neighbours are 1 and 2 (90°); 2's are 3 and 1 (80°), not 0: 0-2 is not mutual, 1-2 is.
    db = unit(0, 10, 90, 100)
    s = neighbour_graph(db, 2, Index(db)).toarray()
    w01, w12, w23 = np.cos(np.radians(10)) ** 3, np.cos(np.radians(80)) ** 3, np.cos(np.radians(10)) ** 3
    degree = np.array([w01, w01 + w12, w12 + w23, w23])
    want = np.zeros((4, 4))
    for i, j, w in [(0, 1, w01), (1, 2, w12), (2, 3, w23)]:
        want[i, j] = want[j, i] = w / np.sqrt(degree[i] * degree[j])
    assert np.allclose(s, want, atol=1e-5)


def test_solve_matches_a_dense_solve():
    rng = np.random.default_rng(0)
    db = rng.normal(size=(40, 5)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    s = neighbour_graph(db, 6, Index(db))
    y = np.maximum(rng.normal(size=(40, 3)), 0).astype(np.float32)
    want = np.linalg.solve(np.eye(40) - 0.9 * s.toarray(), y)
    assert np.allclose(solve(s, y, 0.9), want, atol=2e-3 * np.abs(want).max())


def test_diffusion_follows_the_chain_a_plain_search_skips():
    # A chain 0°, 8°, 16°, 24°, 32° (each a mutual 2-NN of the next) and a lone row at -19°, no one's
    # mutual neighbour. From a query at 2° the lone row is nearer than the chain's last two rows; the
    # walk along the chain ranks the whole chain first.
    db = unit(0, 8, 16, 24, 32, -19)
    base = Index(db)
    q = unit(2)
    _, plain = base.search(q, 6)
    assert plain[0].tolist() == [0, 1, 2, 5, 3, 4]
    graph = neighbour_graph(db, 2, base)
    assert graph[5].nnz == 0 and graph[0, 2] == 0  # 0-16 is not mutual: 16's two nearest are 8 and 24
    diffused = DiffusedIndex(base, db, graph, query_k=1, alpha=0.9)
    dist, ranked = diffused.search(q, 6)
    assert ranked[0].tolist() == [0, 1, 2, 3, 4, 5]  # 5 (unreached) after the reached rows, nearest first
    assert np.allclose(dist[0], np.linalg.norm(db[ranked[0]] - q, axis=1), atol=1e-6)  # still Euclidean
    # A query that is itself a database row is left out of its results
    _, ranked = diffused.search(db[:1], 3, exclude=np.array([0]))
    assert ranked[0].tolist() == [1, 2, 3]



def test_a_stored_graph_multiplies_as_scipy_and_one_column_needs_no_scipy(tmp_path):
    rng = np.random.default_rng(1)
    db = rng.normal(size=(60, 4)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    s = neighbour_graph(db, 3, Index(db))
    assert (np.diff(s.indptr) == 0).any() and (np.diff(s.indptr) > 1).any()  # rows without an edge, rows with several
    save_graph(s, tmp_path / "graph.npz")
    graph = load_graph(tmp_path / "graph.npz")
    for columns in (1, 3):  # one query: numpy; a block: scipy
        p = rng.random((60, columns), dtype=np.float32)
        assert np.allclose(graph @ p, s @ p, atol=1e-6)
    y = np.zeros((60, 1), dtype=np.float32)
    y[0] = 1.0
    assert np.allclose(solve(graph, y, 0.9), solve(s, y, 0.9), atol=1e-6)
    code = (f"import sys, numpy as np; from landmark_ae.retrieval.diffusion import load_graph, solve; "
            f"g = load_graph({str(tmp_path / 'graph.npz')!r}); y = np.zeros((60, 1), np.float32); y[0] = 1; "
            f"solve(g, y, 0.9); print('scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    # arrays that do not make a graph (a damaged or hand-made file) are refused, not multiplied
    np.savez(tmp_path / "bad.npz", data=s.data, indices=s.indices, indptr=s.indptr[:-1], shape=np.array(s.shape))
    with pytest.raises(ValueError, match="do not fit"):
        load_graph(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad.npz", data=s.data, indices=s.indices, indptr=s.indptr[::-1], shape=np.array(s.shape))
    with pytest.raises(ValueError, match="do not fit"):
        load_graph(tmp_path / "bad.npz")
