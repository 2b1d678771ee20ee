"""Post-processing (landmark_ae/retrieval/postprocess.py): pooling, L2 and PCA-whitening against
hand-computed values; embed fits and stores them on train+val, query and evaluate apply them."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_in_process
from PIL import Image

from landmark_ae.errors import UserError
from landmark_ae.retrieval.postprocess import Transform, pool


def test_pooling_by_hand():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]], [[0.0, 4.0], [4.0, 4.0]]]])  # (1, 2, 2, 2)
    assert pool(x, "flatten").tolist() == [[1, 2, 3, 6, 0, 4, 4, 4]]
    assert pool(x, "avg").tolist() == [[3.0, 3.0]]
    assert pool(x, "max").tolist() == [[6.0, 4.0]]
    assert torch.allclose(pool(x, "gem", p=1.0), pool(x, "avg"))  # GeM with p=1 is the mean
    gem2 = pool(x, "gem", p=2.0)[0, 0].item()
    assert gem2 == pytest.approx(((1 + 4 + 9 + 36) / 4) ** 0.5)
    assert pool(x, "gem", p=50.0)[0, 0].item() == pytest.approx(6.0, rel=0.05)  # large p tends to max
    vec = torch.randn(3, 5)
    assert torch.equal(pool(vec, "gem"), vec)  # a vector bottleneck is kept
    with pytest.raises(ValueError):
        pool(x, "median")


def test_a_spatial_pooling_replaces_the_global_pooling_an_encoder_ends_with():
    from torch import nn

    from landmark_ae.retrieval.postprocess import encoder_rows, global_pool_start

    conv = nn.Conv2d(1, 2, 1, bias=False)
    conv.weight.data = torch.tensor([[[[1.0]]], [[[-1.0]]]])  # channel 0: x, channel 1: -x
    pooled = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # as M5 ends
    x = torch.tensor([[[[1.0, 2.0], [-3.0, 4.0]]]])  # after the ReLU: [1, 2, 0, 4] and [0, 0, 3, 0]
    assert global_pool_start(pooled) == 2
    assert global_pool_start(nn.Sequential(conv, nn.AdaptiveAvgPool2d(1))) == 1
    assert global_pool_start(nn.Sequential(conv, nn.AdaptiveAvgPool2d(2), nn.Flatten())) is None
    assert global_pool_start(nn.Sequential(conv, nn.ReLU())) is None
    with torch.no_grad():
        assert encoder_rows(pooled, x).tolist() == [[7 / 4, 3 / 4]]  # flatten: the encoder's own average
        assert encoder_rows(pooled, x, "avg").tolist() == [[7 / 4, 3 / 4]]
        assert encoder_rows(pooled, x, "max").tolist() == [[4.0, 3.0]]
        gem = encoder_rows(pooled, x, "gem", 2.0)[0]
        assert gem[0].item() == pytest.approx(((1 + 4 + 0 + 16) / 4) ** 0.5, rel=1e-5)
        assert gem[1].item() == pytest.approx((9 / 4) ** 0.5, rel=1e-4)  # zeros clamped to 1e-6, not 0
        plain = nn.Sequential(conv, nn.ReLU())  # a conv latent: pooled as before
        assert encoder_rows(plain, x, "max").tolist() == [[4.0, 3.0]]
        assert encoder_rows(plain, x).shape == (1, 8)

def test_l2_alone():
    t = Transform.fit(np.array([[3.0, 4.0], [1.0, 0.0]]), l2=True)
    assert np.allclose(t.apply(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])
    assert Transform.fit(np.ones((3, 2))).identity


def test_pca_whitening_gives_identity_covariance_on_its_fitting_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 5.0
    t = Transform.fit(x, pca_whiten=4)
    y = t.apply(x).astype(np.float64)
    assert y.shape == (500, 4)
    assert np.allclose(y.mean(0), 0, atol=1e-4)
    assert np.allclose(y.T @ y / len(y), np.eye(4), atol=1e-3)
    # axes in order of variance, sign fixed: refitting the same rows gives the same transform
    assert np.allclose(Transform.fit(x, pca_whiten=4).projection, t.projection)
    # more rows than dims or fewer: both routes whiten
    wide = rng.normal(size=(20, 50))
    yw = Transform.fit(wide, pca_whiten=10).apply(wide).astype(np.float64)
    assert np.allclose(yw.T @ yw / 20, np.eye(10), atol=1e-3)
    with pytest.raises(ValueError, match="at most 19 axes"):  # 20 rows: 19 axes of variance
        Transform.fit(wide, pca_whiten=30)


def test_whitening_shrinkage_by_hand():
    # centred rows with variances 4 and 1 along the axes: full whitening scales by 1/2 and 1; a
    # shrinkage s adds s * 4 (the largest eigenvalue) to both first: 1/sqrt(4 + 4s), 1/sqrt(1 + 4s)
    x = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]]) * np.sqrt(2)  # variances 4, 1
    full = Transform.fit(x, pca_whiten=2, shrink=0.0)
    assert np.allclose(np.abs(full.projection), [[0.5, 0.0], [0.0, 1.0]], atol=1e-6)
    soft = Transform.fit(x, pca_whiten=2, shrink=0.25)
    assert np.allclose(np.abs(soft.projection), [[1 / np.sqrt(5), 0.0], [0.0, 1 / np.sqrt(2)]], atol=1e-6)


def test_transform_round_trips_through_npz(tmp_path):
    x = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    t = Transform.fit(x, l2=True, pca_whiten=3)
    t.save(tmp_path / "t.npz")
    again = Transform.load(tmp_path / "t.npz")
    assert again.l2 and np.array_equal(again.apply(x), t.apply(x))
    y = t.apply(x)
    assert np.allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)


def test_embed_fits_on_train_val_only_and_query_applies_it(tiny_trained, tiny_prepared, tmp_path, capsys):
    proc = run_in_process("embed", f"train_run={tiny_trained}", "pooling=avg", "l2=true", "pca_whiten=4", "progress=false",
                          run_dir=tmp_path / "whitened")
    run = proc["run_dir"]
    meta = json.loads((run / "embed.json").read_text())
    assert (meta["pooling"], meta["l2"], meta["pca_whiten"], meta["raw_dim"], meta["dim"]) == ("avg", True, 4, 8, 4)
    emb = np.load(run / "embeddings.npy").astype(np.float64)
    index = pd.read_csv(run / "index.csv")
    db = index["split"].isin(["train", "val"]).to_numpy()
    # refitting on the train+val rows of the raw (pooled) embeddings reproduces the stored rows
    raw = run_in_process("embed", f"train_run={tiny_trained}", "pooling=avg", "progress=false", run_dir=tmp_path / "raw")
    raw_emb = np.load(raw["run_dir"] / "embeddings.npy")
    refit = Transform.fit(raw_emb[db], l2=True, pca_whiten=4)
    assert np.allclose(refit.apply(raw_emb), emb, atol=1e-4)
    assert not np.allclose(Transform.fit(raw_emb, l2=True, pca_whiten=4).apply(raw_emb), emb, atol=1e-4)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)

    # query: a near-duplicate of a train image, through the stored transform, ranks it first
    manifest = pd.read_csv(tiny_prepared / "train.csv", dtype={"id": str})
    target = manifest.iloc[5]
    img = np.clip(np.asarray(Image.open(tiny_prepared / target["path"]).convert("RGB")).astype(int) + 3, 0, 255)
    Image.fromarray(img.astype(np.uint8)).save(tmp_path / "dup.png")
    capsys.readouterr()
    run_in_process("query", f"image={tmp_path / 'dup.png'}", "k=3", f"embed_run={run}", run_dir=tmp_path / "query")
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out), delimiter="\t"))
    assert rows[0]["id"] == target["id"] and float(rows[0]["distance"]) < float(rows[1]["distance"])

    # evaluate on val queries (settings are chosen there, not on test)
    res = run_in_process("evaluate", f"embed_run={run}", "queries=val", run_dir=tmp_path / "evaluate")
    assert int(res["model.n_queries"]) == int((index["split"] == "val").sum())
    assert res["pixels.name"] == "pixels_4x4"  # the baseline keeps the model's raw size


def test_pca_whiten_larger_than_the_embedding_is_one_line_error(tiny_trained, tmp_path):
    with pytest.raises(UserError, match="pca_whiten=64") as info:
        run_in_process("embed", f"train_run={tiny_trained}", "pooling=avg", "pca_whiten=64", "progress=false",
                       run_dir=tmp_path / "run")
    assert "\n" not in str(info.value)
