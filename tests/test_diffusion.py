"""Diffusion re-ranking (landmark_ae/retrieval/diffusion.py) against hand-computed graphs and a dense
solve, and embed storing its graph, query and evaluate (queries=test and queries=all) applying it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_in_process
from test_expansion import unit

from landmark_ae.errors import UserError
from landmark_ae.retrieval.diffusion import DiffusedIndex, load_graph, neighbour_graph, solve
from landmark_ae.retrieval.embed_run import EmbedRun
from landmark_ae.retrieval.expansion import ExpandedIndex, dba
from landmark_ae.retrieval.index import Index
from landmark_ae.retrieval.metrics import retrieval_scores


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


def test_embed_stores_the_graph_and_query_evaluate_diffuse(tiny_trained, tmp_path):
    with pytest.raises(UserError, match="diffusion_k=3 needs l2=true"):
        run_in_process("embed", f"train_run={tiny_trained}", "diffusion_k=3", "progress=false", run_dir=tmp_path / "no")
    out = run_in_process("embed", f"train_run={tiny_trained}", "pooling=avg", "l2=true", "dba_k=2", "qe_k=2",
                         "diffusion_k=3", "diffusion_query_k=2", "diffusion_alpha=0.8", "progress=false",
                         run_dir=tmp_path / "diffused")
    run = EmbedRun(out["run_dir"])
    assert (run.meta["diffusion_k"], run.meta["diffusion_query_k"], run.meta["diffusion_alpha"]) == (3, 2, 0.8)
    assert "diffusion.npz" in json.loads((run.run_dir / "manifest.json").read_text())["artifacts"]
    stored = np.asarray(run.database_rows())
    graph = load_graph(run.run_dir / "diffusion.npz")
    assert np.allclose(graph.toarray(), neighbour_graph(stored, 3, Index(stored)).toarray(), atol=1e-6)
    # query and serve: αQE then diffusion over the stored graph
    index = run.index()
    assert isinstance(index, DiffusedIndex) and isinstance(index.base, ExpandedIndex)
    test = run.rows("test")
    want = DiffusedIndex(ExpandedIndex(Index(stored), stored, 2, 3.0), stored, graph, 2, 0.8)
    assert np.array_equal(index.search(run.embeddings[test], 4)[1], want.search(run.embeddings[test], 4)[1])
    res = run_in_process("evaluate", f"embed_run={run.run_dir}", run_dir=tmp_path / "evaluate")
    r = retrieval_scores(run.embeddings[test], run.labels[test], stored, run.labels[run.database()], index=want)
    assert float(res["model.map@100"]) == pytest.approx(r["map@100"], abs=1e-6)
    # queries=all: the graph is built over every row (after DBA over them), the query itself left out
    res = run_in_process("evaluate", f"embed_run={run.run_dir}", "queries=all", run_dir=tmp_path / "all")
    x = np.asarray(run.embeddings)
    every = dba(x, 2, 3.0, Index(x))
    index = DiffusedIndex(ExpandedIndex(Index(every), every, 2, 3.0), every, neighbour_graph(every, 3, Index(every)), 2, 0.8)
    r = retrieval_scores(x, run.labels, every, run.labels, index=index, exclude=np.arange(len(x)))
    assert float(res["model.map@100"]) == pytest.approx(r["map@100"], abs=1e-6)
    # a run whose graph went missing says so instead of ranking without it
    (run.run_dir / "diffusion.npz").unlink()
    with pytest.raises(UserError, match="diffusion.npz is missing or damaged"):
        EmbedRun(run.run_dir).index()
