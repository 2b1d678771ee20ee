"""The database search behind `index=` (landmark_ae/retrieval/index.py) and `evaluate kmeans=faiss`:
every backend against the exact numpy oracle on seeded clustered data, Euclidean distances for plain
and L2-normalised rows, the save/load round trip, the pipeline promise (an hnsw embed run answers
queries as the exact one does) and a damaged or missing index.faiss as one line naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import modules_loaded_by, run_in_process

from landmark_ae.errors import UserError
from landmark_ae.retrieval.embed_run import EmbedRun
from landmark_ae.retrieval.index import INDEX_FILE, Index, build, drop_excluded, ivf_nlist, load_index
from landmark_ae.retrieval.metrics import clustering_scores, kmeans_labels
from landmark_ae.retrieval.retriever import Retriever
from landmark_ae.retrieval.search import search

DEFAULTS = {"nlist": 1024, "nprobe": 32, "M": 32, "efConstruction": 80, "efSearch": 128, "seed": 0}


def clustered(n: int, dim: int = 48, centres: int = 40, seed: int = 0, l2: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(99).normal(size=(centres, dim))
    x = (c[rng.integers(0, centres, n)] + 0.4 * rng.normal(size=(n, dim))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True) if l2 else x


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module", params=[False, True], ids=["euclidean", "l2"])
def data(request):
    l2 = request.param
    x, q = clustered(6000, l2=l2), clustered(200, seed=1, l2=l2)
    return l2, x, q, search(q, x, 10)


@pytest.mark.parametrize("name", ["exact", "flat", "ivf", "hnsw"])
def test_each_backend_matches_the_exact_oracle(data, name):
    l2, x, q, (d0, i0) = data
    index = build(x, {"name": name, **DEFAULTS}, l2=l2)
    d, i = index.search(q, 10)
    assert d.dtype == np.float64 and i.dtype == np.int64 and d.shape == i.shape == (200, 10)
    assert (np.diff(d, axis=1) >= -1e-6).all()  # ascending
    # whatever row was found, its distance is the Euclidean one
    true = np.linalg.norm(q[:, None, :].astype(np.float64) - x[i].astype(np.float64), axis=2)
    np.testing.assert_allclose(d, true, atol=1e-3)
    if name == "exact":
        np.testing.assert_array_equal(i, i0)
        np.testing.assert_array_equal(d, d0)
    elif name == "flat":  # the same lists up to float32 rounding: only near-ties may swap
        np.testing.assert_allclose(true, d0, atol=1e-5)
        assert (i == i0).mean() >= 0.99
    else:
        assert recall(i, i0) >= 0.95


def test_k_is_clamped_and_ivf_works_on_tiny_databases():
    x = clustered(30)
    assert ivf_nlist(30, 1024) == 1 and ivf_nlist(1_000_000, 1024) == 1024
    for name in ("flat", "ivf", "hnsw"):
        d, i = build(x, {"name": name, **DEFAULTS}, l2=False).search(x[:3], 100)
        assert d.shape == (3, 30) and sorted(i[0]) == list(range(30))
        assert i[:, 0].tolist() == [0, 1, 2] and np.allclose(d[:, 0], 0, atol=1e-3)


@pytest.mark.parametrize("name", ["flat", "ivf", "hnsw"])
def test_save_and_load_round_trip(tmp_path, name):
    x, q = clustered(2000, l2=True), clustered(20, seed=1, l2=True)
    index = build(x, {"name": name, **DEFAULTS}, l2=True)
    assert index.save(tmp_path) == [INDEX_FILE]
    meta = {"index": {**index.settings, "file": INDEX_FILE}}
    loaded = load_index(tmp_path, meta, x)
    assert loaded.name == name
    for a, b in zip(index.search(q, 7), loaded.search(q, 7), strict=True):
        np.testing.assert_array_equal(a, b)


def test_exact_saves_nothing_and_old_runs_search_exactly(tmp_path):
    x = clustered(50)
    assert build(x, {"name": "exact"}, l2=False).save(tmp_path) == [] and not list(tmp_path.iterdir())
    assert load_index(tmp_path, {}, x).name == "exact"


def test_index_module_does_not_import_faiss():  # query/serve start-up with index=exact
    assert modules_loaded_by("landmark_ae.retrieval.index", ("faiss", "torch", "sklearn", "pandas")) == set()


def test_faiss_and_sklearn_kmeans_find_the_same_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 16)) * 10
    truth = np.repeat(np.arange(8), 25)
    x = (centres[truth] + rng.normal(size=(200, 16))).astype(np.float32)
    a = kmeans_labels(x, 8, seed=0, n_init=3, backend="faiss")
    b = kmeans_labels(x, 8, seed=0, n_init=3, backend="sklearn")
    assert a.dtype == np.int64 and a.shape == (200,)
    assert clustering_scores(a, b)["nmi"] == pytest.approx(1.0)
    assert clustering_scores(truth, a)["nmi"] == pytest.approx(1.0)
    np.testing.assert_array_equal(a, kmeans_labels(x, 8, seed=0, n_init=3, backend="faiss"))  # seeded


# ---- the pipeline: embed index=hnsw, query, evaluate, damaged files ---------------------------


@pytest.fixture(scope="module")
def hnsw_embedded(tiny_trained: Path, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("hnsw") / "embed"
    out = run_in_process("embed", f"train_run={tiny_trained}", "index=hnsw", "l2=true", "progress=false",
                         run_dir=run_dir)
    assert out["index"] == "hnsw"
    return run_dir


def test_embed_records_the_index_in_embed_json_and_manifest(hnsw_embedded):
    meta = json.loads((hnsw_embedded / "embed.json").read_text())
    assert meta["index"]["name"] == "hnsw" and meta["index"]["metric"] == "ip" and meta["index"]["file"] == INDEX_FILE
    assert INDEX_FILE in json.loads((hnsw_embedded / "manifest.json").read_text())["artifacts"]
    run = EmbedRun(hnsw_embedded)
    assert run.index_name == "hnsw" and run.index().size == len(run.database())


def test_hnsw_query_returns_the_exact_top5(hnsw_embedded, tmp_path, capsys):
    run = EmbedRun(hnsw_embedded)
    test_paths = [p for p, s in zip(run.paths, run.splits, strict=True) if s == "test"][:5]
    assert len(test_paths) == 5
    capsys.readouterr()
    run_in_process("query", "image=[" + ",".join(test_paths) + "]", f"embed_run={hnsw_embedded}", "k=5",
                   "format=json", run_dir=tmp_path / "query")
    hnsw = [[h["id"] for h in r["neighbours"]] for r in json.loads(capsys.readouterr().out)]
    # the same run searched exactly (numpy): what `embed l2=true` with index=exact answers
    retriever = Retriever(run)
    assert retriever.index_name == "hnsw"
    retriever.index = Index(retriever.database)
    images = np.stack([retriever.load_image(p) for p in test_paths])
    exact = [[h["id"] for h in hits] for hits in retriever.neighbours(images, 5)]
    assert sum(a == b for a, b in zip(hnsw, exact, strict=True)) >= 4


def test_evaluate_with_the_stored_index_and_faiss_kmeans(hnsw_embedded, tmp_path):
    out = run_in_process("evaluate", f"embed_run={hnsw_embedded}", "kmeans=faiss", "pixel_baseline=false",
                         run_dir=tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["settings"]["kmeans"] == "faiss" and metrics["settings"]["index"] == "hnsw"
    assert 0 <= float(out["model.nmi"]) <= 1 and 0 <= float(out["model.map@100"]) <= 1
    val = run_in_process("evaluate", f"embed_run={hnsw_embedded}", "queries=val", "kmeans=sklearn",
                         "pixel_baseline=false", run_dir=tmp_path / "eval_val")
    assert 0 <= float(val["model.map@100"]) <= 1


@pytest.mark.parametrize("damage", ["truncated", "missing", "garbage"])
def test_a_damaged_or_missing_index_is_one_line_naming_the_file(hnsw_embedded, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(hnsw_embedded, run)
    path = run / INDEX_FILE
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:  # garbage with a fresh manifest: the manifest cannot tell, faiss's reader must
        path.write_bytes(b"not an index" * 20)
        manifest = json.loads((run / "manifest.json").read_text())
        del manifest["artifacts"][INDEX_FILE]
        (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=INDEX_FILE) as exc:
        EmbedRun(run).index()
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)  # the CLI prints it as its one line


def test_exclude_works_alike_in_every_backend():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exclude = np.arange(40)
    exclude[3] = -1  # this one keeps itself
    want_d, want_i = Index(x).search(x, 5, exclude=exclude)
    assert (want_i != exclude[:, None]).all() and want_i[3, 0] == 3
    for settings in ({"name": "flat"}, {"name": "hnsw", "M": 16, "efConstruction": 80, "efSearch": 64}):
        got_d, got_i = build(x, settings, l2=True).search(x, 5, exclude=exclude)
        assert np.array_equal(got_i, want_i) and np.allclose(got_d, want_d, atol=1e-5)
    # k beyond the database: padded with (inf, -1) after the n - 1 others
    d, i = build(x, {"name": "flat"}, l2=True).search(x[:2], 50, exclude=np.array([0, 1]))
    assert i.shape == (2, 40) and (i[:, -1] == -1).all() and np.isinf(d[:, -1]).all() and (i[:, :-1] >= 0).all()
    d, i = drop_excluded(np.array([[0.0, 1.0, 2.0]]), np.array([[7, 8, 9]]), np.array([5]), 2)
    assert i.tolist() == [[7, 8]] and d.tolist() == [[0.0, 1.0]]  # not among them: the last dropped
