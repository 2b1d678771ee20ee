"""`evaluate` (landmark_ae/retrieval/evaluate.py) through the CLI on the pipeline's embed run: the
model's and the raw-pixel baseline's scores, each equal to what the metrics compute from the stored
embeddings; the ARI/AMI equal scikit-learn's on the run's own k-means, as the mean ± std over the
k-means seeds (kmeans_seeds); kmeans_seeds=1 is the single run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import one_line_error, results, run_cli, run_in_process
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

from landmark_ae.errors import UserError
from landmark_ae.retrieval.metrics import clustering_scores, evaluate_embeddings, kmeans_labels

METRICS = ("nmi", "ri", "ari", "ami", "map@100", "p@1", "p@10", "recall@100")
SPREAD = ("nmi_std", "ri_std", "ari_std", "ami_std")


def test_evaluate_reports_model_and_pixel_baseline(tiny_embedded):
    proc = run_cli("evaluate", f"embed_run={tiny_embedded}", outputs=tiny_embedded.parent.parent)
    assert proc.returncode == 0, proc.stderr
    res = results(proc)
    run_dir = Path(res["run_dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["results"]) == {"m1", "pixels_11x11"}
    assert res["model.name"] == "m1" and res["pixels.name"] == "pixels_11x11"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
    for kind, name in (("model", "m1"), ("pixels", "pixels_11x11")):
        for m in METRICS:
            printed = float(res[f"{kind}.{m}"])
            lo = -1.0 if m in ("ari", "ami") else 0.0  # adjusted scores are negative below chance
            assert lo <= printed <= 1.0, (kind, m, printed)
            assert printed == pytest.approx(metrics["results"][name][m], abs=1e-6)  # stdout == metrics.json

    # the numbers are the metrics module's on the stored embeddings, same split
    emb = np.load(tiny_embedded / "embeddings.npy")
    index = pd.read_csv(tiny_embedded / "index.csv")
    lab, split = index["landmark_id"].to_numpy(), index["split"].to_numpy()
    tr, te, db = split == "train", split == "test", np.isin(split, ["train", "val"])
    direct = evaluate_embeddings(emb[tr], lab[tr], emb[te], lab[te], emb[db], lab[db], seed=0, n_init=10, k=100,
                                 kmeans_seeds=5)
    for m in (*METRICS, *SPREAD):
        assert float(res[f"model.{m}"]) == pytest.approx(direct[m], abs=1e-6), m
    assert res["model.kmeans_seeds"] == res["pixels.kmeans_seeds"] == "5" and metrics["settings"]["kmeans_seeds"] == 5
    assert [r["seed"] for r in metrics["results"]["m1"]["kmeans_per_seed"]] == [0, 1, 2, 3, 4]
    assert "mean ± std (5 k-means seeds)" in proc.stderr  # the table's title; its cells read mean ± std
    assert f"{metrics['results']['m1']['nmi']:.4f} ± {metrics['results']['m1']['nmi_std']:.4f}" in proc.stderr
    assert int(res["model.n_queries"]) == te.sum() and int(res["model.n_clusters"]) == len(np.unique(lab[tr]))

    # the figures: PNGs named in metrics.json; per-landmark AP (from the same retrieval) averages back to mAP@100
    assert metrics["figures"] == ["embedding_map.png", "per_landmark_ap.png"]
    for name in metrics["figures"]:
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    per = metrics["per_landmark_ap"]
    assert [r["ap"] for r in per] == sorted((r["ap"] for r in per), reverse=True)
    assert {r["landmark_id"] for r in per} <= set(lab[te]) and sum(r["n_queries"] for r in per) == te.sum() - int(
        res["model.n_queries_without_relevant"])
    weighted = sum(r["ap"] * r["n_queries"] for r in per) / sum(r["n_queries"] for r in per)
    assert weighted == pytest.approx(metrics["results"]["m1"]["map@100"], abs=1e-9)

    # NMI, ARI and AMI are scikit-learn's, on k-means of the train rows with evaluate's n_init and seeds 0..4:
    # the printed figure is their mean, its _std their population std (numpy's np.std)
    clusterings = [kmeans_labels(emb[tr], len(np.unique(lab[tr])), seed=s, n_init=10) for s in range(5)]
    for m, sk in (("nmi", normalized_mutual_info_score), ("ari", adjusted_rand_score),
                  ("ami", adjusted_mutual_info_score)):
        per_seed = [sk(lab[tr], c) for c in clusterings]
        assert float(res[f"model.{m}"]) == pytest.approx(np.mean(per_seed), abs=1e-6), m
        assert float(res[f"model.{m}_std"]) == pytest.approx(np.std(per_seed), abs=1e-6), m


def test_one_kmeans_seed_is_the_single_run_of_before(tiny_embedded, tmp_path):
    out = run_in_process("evaluate", f"embed_run={tiny_embedded}", "kmeans_seeds=1", "pixel_baseline=false",
                         "n_init=2", run_dir=tmp_path / "evaluate")
    emb = np.load(tiny_embedded / "embeddings.npy")
    index = pd.read_csv(tiny_embedded / "index.csv")
    tr = (index["split"] == "train").to_numpy()
    lab = index["landmark_id"].to_numpy()[tr]
    single = clustering_scores(lab, kmeans_labels(emb[tr], len(np.unique(lab)), seed=0, n_init=2))
    metrics = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())["results"]["m1"]
    for m, value in single.items():
        assert metrics[m] == value and metrics[f"{m}_std"] == 0.0, m  # exactly the one run's figure
    assert out["model.kmeans_seeds"] == 1 and len(metrics["kmeans_per_seed"]) == 1


def test_kmeans_seeds_below_one_is_refused_in_one_line(tmp_path):
    proc = run_cli("evaluate", "kmeans_seeds=0", outputs=tmp_path / "outputs")
    one_line_error(proc, "kmeans_seeds=0 is out of range: it must be >= 1")


def test_evaluate_without_an_embed_run_is_refused(tmp_path):
    with pytest.raises(UserError, match="no complete embed run found"):
        run_in_process("evaluate", f"paths.output_dir={tmp_path / 'outputs'}", run_dir=tmp_path / "run")
