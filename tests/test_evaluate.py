"""`evaluate` (landmark_ae/retrieval/evaluate.py) through the CLI on the pipeline's embed run: the
model's and the raw-pixel baseline's scores, each equal to what the metrics compute from the stored
embeddings; the ARI/AMI equal scikit-learn's on the run's own k-means."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import results, run_cli, run_in_process
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

from landmark_ae.errors import UserError
from landmark_ae.retrieval.metrics import evaluate_embeddings, kmeans_labels

METRICS = ("nmi", "ri", "ari", "ami", "map@100", "p@1", "p@10", "recall@100")


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
    direct = evaluate_embeddings(emb[tr], lab[tr], emb[te], lab[te], emb[db], lab[db], seed=0, n_init=10, k=100)
    for m in METRICS:
        assert float(res[f"model.{m}"]) == pytest.approx(direct[m], abs=1e-6), m
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

    # ARI and AMI are scikit-learn's, on k-means of the train rows with evaluate's seed and n_init
    clusters = kmeans_labels(emb[tr], len(np.unique(lab[tr])), seed=0, n_init=10)
    assert float(res["model.ari"]) == pytest.approx(adjusted_rand_score(lab[tr], clusters), abs=1e-6)
    assert float(res["model.ami"]) == pytest.approx(adjusted_mutual_info_score(lab[tr], clusters), abs=1e-6)


def test_evaluate_without_an_embed_run_is_refused(tmp_path):
    with pytest.raises(UserError, match="no complete embed run found"):
        run_in_process("evaluate", f"paths.output_dir={tmp_path / 'outputs'}", run_dir=tmp_path / "run")
