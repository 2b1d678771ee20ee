"""DBA and αQE (landmark_ae/retrieval/expansion.py) against hand-computed unit vectors, and embed
storing them, query and evaluate (queries=test and queries=all) applying them; the same for
diffusion's graph (its own parts: test_diffusion.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_in_process

from landmark_ae.errors import UserError
from landmark_ae.retrieval.diffusion import DiffusedIndex, load_graph, neighbour_graph
from landmark_ae.retrieval.embed_run import EmbedRun
from landmark_ae.retrieval.expansion import ExpandedIndex, dba, expand
from landmark_ae.retrieval.index import Index, build
from landmark_ae.retrieval.metrics import retrieval_scores
from landmark_ae.retrieval.retriever import Retriever


def unit(*degrees: float) -> np.ndarray:
    """Unit vectors in the plane at these angles."""
    a = np.radians(degrees)
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def angles(x: np.ndarray) -> np.ndarray:
    return np.degrees(np.arctan2(x[:, 1], x[:, 0]))


def test_dba_by_hand():
    x = unit(0, 30, 90)
    # alpha 0: the plain mean of a row and its nearest other row (0 <-> 30, 90 -> 30), on the unit circle
    assert np.allclose(angles(dba(x, 1, 0.0, Index(x))), [15, 15, 60], atol=1e-4)
    # alpha 1: the neighbour weighs cos(angle between): 0 + cos30 * 30 -> atan(sin30 cos30 / (1 + cos30^2))
    assert np.allclose(angles(dba(x, 1, 1.0, Index(x))), [13.8979, 16.1021, 70.8934], atol=1e-3)
    # k 2: every other row (the 0-90 pair has weight cos90^1 = 0): 0 -> 0 + cos30 * 30 as before
    assert np.allclose(angles(dba(x, 2, 1.0, Index(x)))[0], 13.8979, atol=1e-3)
    assert np.allclose(np.linalg.norm(dba(x, 2, 1.0, Index(x)), axis=1), 1, atol=1e-6)
    assert np.array_equal(dba(x, 0, 3.0, Index(x)), x)  # k 0: off
    # a FAISS exact index finds the same neighbours
    assert np.allclose(dba(x, 1, 1.0, build(x, {"name": "flat"}, l2=True)), dba(x, 1, 1.0, Index(x)), atol=1e-6)


def test_expand_weights_clamp_negative_similarities_and_skip_missing():
    rows = unit(0)
    database = unit(90, 180, 30)
    # 180 is opposite (cos -1, clamped to weight 0), 90 orthogonal (weight 0): the row is unchanged
    assert np.allclose(expand(rows, database, np.array([[0, 1, -1]]), 2.0), rows, atol=1e-6)
    assert np.allclose(angles(expand(rows, database, np.array([[2, -1, -1]]), 0.0)), [15], atol=1e-4)


def test_alpha_query_expansion_by_hand():
    database = unit(0, 50, -45)
    index = ExpandedIndex(Index(database), database, k=1, alpha=0.0)
    # q at 20 deg: its first result is 0 deg; q' = mean(20, 0) = 10 deg, whose distances are 2 sin(angle / 2)
    distances, positions = index.search(unit(20), 3)
    assert positions.tolist() == [[0, 1, 2]]
    assert np.allclose(distances, [[2 * np.sin(np.radians(a / 2)) for a in (10, 40, 55)]], atol=1e-5)
    # k 2, alpha 1: q' = q + cos20 * e(0) + cos30 * e(50)
    q = unit(20)[0] + np.cos(np.radians(20)) * unit(0)[0] + np.cos(np.radians(30)) * unit(50)[0]
    q /= np.linalg.norm(q)
    distances, _ = ExpandedIndex(Index(database), database, k=2, alpha=1.0).search(unit(20), 1)
    assert distances[0, 0] == pytest.approx(np.linalg.norm(q - unit(0)[0]), abs=1e-5)
    # exclude: a query that is a database row expands with (and finds) the others only
    distances, positions = index.search(database[:1], 2, exclude=np.array([0]))
    assert positions.tolist() == [[2, 1]]  # expanded with -45 deg (nearer than 50): q' = -22.5 deg
    assert np.allclose(distances, [[2 * np.sin(np.radians(11.25)), 2 * np.sin(np.radians(36.25))]], atol=1e-5)


def test_embed_stores_dba_and_query_evaluate_apply_it_with_qe(tiny_trained, tmp_path, capsys):
    with pytest.raises(UserError, match="need l2=true"):
        run_in_process("embed", f"train_run={tiny_trained}", "dba_k=2", "progress=false", run_dir=tmp_path / "refused")
    plain = run_in_process("embed", f"train_run={tiny_trained}", "pooling=avg", "l2=true", "progress=false",
                           run_dir=tmp_path / "plain")["run_dir"]
    out = run_in_process("embed", f"train_run={tiny_trained}", "pooling=avg", "l2=true", "dba_k=3", "dba_alpha=1",
                         "qe_k=2", "qe_alpha=0", "progress=false", run_dir=tmp_path / "dba")
    run = EmbedRun(out["run_dir"])
    assert (run.meta["dba_k"], run.meta["dba_alpha"], run.meta["qe_k"], run.meta["qe_alpha"]) == (3, 1.0, 2, 0.0)
    base = EmbedRun(plain)
    # embeddings.npy: the rows a query gets (no DBA); database.npy: DBA over the train+val rows
    assert np.allclose(run.embeddings, base.embeddings, atol=1e-6)
    db = base.embeddings[base.database()]
    stored = run.database_rows()
    assert np.allclose(stored, dba(db, 3, 1.0, Index(np.asarray(db))), atol=1e-6)
    assert not np.allclose(stored, db, atol=1e-3)
    # query and serve search the DBA'd rows with αQE: the Retriever's index is the expansion over them
    index = run.index()
    assert isinstance(index, ExpandedIndex) and index.k == 2 and index.alpha == 0.0
    test = run.rows("test")
    want = ExpandedIndex(Index(np.asarray(stored)), np.asarray(stored), 2, 0.0).search(run.embeddings[test], 4)
    got = index.search(run.embeddings[test], 4)
    assert np.array_equal(got[1], want[1])
    retriever = Retriever(run)  # what query and serve answer with
    assert isinstance(retriever.index, ExpandedIndex) and np.array_equal(retriever.database, stored)

    # evaluate scores the same: test queries against the stored database, through αQE
    res = run_in_process("evaluate", f"embed_run={run.run_dir}", run_dir=tmp_path / "evaluate")
    r = retrieval_scores(run.embeddings[test], run.labels[test], stored, run.labels[run.database()], k=100,
                         index=ExpandedIndex(Index(np.asarray(stored)), np.asarray(stored), 2, 0.0))
    assert float(res["model.map@100"]) == pytest.approx(r["map@100"], abs=1e-6)
    metrics = json.loads((res["run_dir"] / "metrics.json").read_text())
    assert metrics["postprocess"]["dba_k"] == 3 and metrics["postprocess"]["qe_k"] == 2
    # queries=all: every image against all the others (DBA over all rows), clustering on all
    res = run_in_process("evaluate", f"embed_run={run.run_dir}", "queries=all", run_dir=tmp_path / "all")
    n = len(run.ids)
    assert int(res["model.n_queries"]) == n and int(res["pixels.n_queries"]) == n
    every = np.arange(n)
    augmented = dba(np.asarray(run.embeddings), 3, 1.0, Index(np.asarray(run.embeddings)))
    r = retrieval_scores(run.embeddings, run.labels, augmented, run.labels, k=100, exclude=every,
                         index=ExpandedIndex(Index(augmented), augmented, 2, 0.0))
    assert float(res["model.map@100"]) == pytest.approx(r["map@100"], abs=1e-6)
    assert float(res["model.p@1"]) < 1.0  # itself left out
    assert int(res["model.n_clusters"]) == len(set(run.labels.tolist()))


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
    assert np.allclose(graph.scipy().toarray(), neighbour_graph(stored, 3, Index(stored)).toarray(), atol=1e-6)
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
