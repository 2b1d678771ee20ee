"""Sampling and splitting rules, on constructed rows and on real GLDv2 CSV rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA

from landmark_ae.data.splits import read_sample, split_rows
from landmark_ae.errors import UserError

SAMPLES = SHARED_DATA / "gldv2-csv-samples"


def make_rows(counts: dict[int, int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(f"{rng.integers(0, 2**63):016x}", f"http://x/{lid}", lid) for lid, n in counts.items() for _ in range(n)]
    return pd.DataFrame(rows, columns=["id", "url", "landmark_id"])


def write_csv(path: Path, df: pd.DataFrame) -> Path:
    df.to_csv(path, index=False)
    return path


def test_split_rules_per_landmark():
    counts = {1: 1, 2: 2, 3: 10, 4: 150, 5: 1000}
    out = split_rows(make_rows(counts), 0.01, 0.2, seed=0)
    table = out.groupby(["landmark_id", "split"]).size().unstack(fill_value=0)
    # singletons stay in train (a test query needs a relevant image in the database)
    assert table.loc[1].to_dict() == {"test": 0, "train": 1, "val": 0}
    # every landmark with >= 2 images has >= 1 test image; 1% of 150 rounds to 2 (1.5 half-up), of 1000 is 10
    assert table.loc[2, "test"] == 1 and table.loc[3, "test"] == 1
    assert table.loc[4, "test"] == 2 and table.loc[5, "test"] == 10
    # the rest 80/20: 148 -> val round(29.6)=30; 990 -> val 198
    assert table.loc[4, "val"] == 30 and table.loc[4, "train"] == 118
    assert table.loc[5, "val"] == 198 and table.loc[5, "train"] == 792
    assert len(out) == sum(counts.values()) and out["id"].is_unique


def test_split_is_seeded_and_independent_of_row_order():
    rows = make_rows({7: 40, 8: 25, 9: 3})
    a = split_rows(rows, 0.05, 0.2, seed=1)
    b = split_rows(rows.sample(frac=1, random_state=5), 0.05, 0.2, seed=1)
    c = split_rows(rows, 0.05, 0.2, seed=2)
    assert a.set_index("id")["split"].to_dict() == b.set_index("id")["split"].to_dict()
    assert a.set_index("id")["split"].to_dict() != c.set_index("id")["split"].to_dict()


def test_read_sample_filters_range_in_chunks_and_rejects_bad_ids(tmp_path):
    rows = make_rows({999: 3, 1000: 4, 1500: 5, 1999: 2, 2000: 6})
    bad = pd.DataFrame([["../../x", "u", 1000], ["ABCDEF0123456789", "u", 1000], [rows.iloc[3, 0], "dup", 1000]],
                       columns=["id", "url", "landmark_id"])
    path = write_csv(tmp_path / "train.csv", pd.concat([rows, bad]))
    whole = read_sample(path, 1000, 2000, chunksize=1_000_000)
    chunked = read_sample(path, 1000, 2000, chunksize=3)
    assert sorted(whole.rows["id"]) == sorted(chunked.rows["id"])
    assert sorted(whole.rows["landmark_id"].unique()) == [1000, 1500, 1999] and len(whole.rows) == 11
    assert sorted(whole.rejected["reason"]) == ["duplicate_id", "invalid_id", "invalid_id"]
    assert whole.counts_all.to_dict() == chunked.counts_all.to_dict() == {999: 3, 1000: 7, 1500: 5, 1999: 2, 2000: 6}


def test_csv_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_sample(tmp_path / "nope.csv", 0, 10)
    path = write_csv(tmp_path / "a.csv", pd.DataFrame({"image_id": ["a"], "landmark": [1]}))
    with pytest.raises(UserError, match="no id/landmark_id column"):
        read_sample(path, 0, 10)
    path = write_csv(tmp_path / "b.csv", make_rows({5: 3}))
    with pytest.raises(UserError, match="empty landmark_id range"):
        read_sample(path, 10, 10)
    with pytest.raises(UserError, match="no usable rows"):
        read_sample(path, 100, 200)
    (tmp_path / "c.csv").write_text("")
    with pytest.raises(UserError, match="empty"):
        read_sample(tmp_path / "c.csv", 0, 10)


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="real GLDv2 CSV samples not present (../shared/data)")
def test_real_kaggle_rows_parse_and_sample():
    sample = read_sample(SAMPLES / "gldv2_train_rows_from_kaggle_notebook.csv", 0, 10**7, chunksize=10)
    assert len(sample.rows) == 44 and sample.rows["url"].str.match(r"https?://upload.wikimedia.org/").all()
    assert sample.rows["id"].str.fullmatch(r"[0-9a-f]{16}").all()


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="real GLDv2 CSV samples not present (../shared/data)")
def test_real_micro_metadata_in_gldv2_format_sampled_like_the_seed(tmp_path):
    meta = pd.read_csv(SAMPLES / "jugen64_gldv2_micro_metadata.csv", dtype={"image_id": str})
    gld = pd.DataFrame({"id": meta["image_id"].str.removesuffix(".jpg"), "url": "", "landmark_id": meta["landmark_id"]})
    path = write_csv(tmp_path / "train.csv", gld)
    lo, hi = int(gld["landmark_id"].quantile(0.2)), int(gld["landmark_id"].quantile(0.6))
    sample = read_sample(path, lo, hi, chunksize=1000)
    expected = gld[(gld["landmark_id"] >= lo) & (gld["landmark_id"] < hi)]
    assert len(sample.rows) == len(expected) > 1000
    out = split_rows(sample.rows, 0.01, 0.2, seed=0)
    per = out.groupby("landmark_id")["split"].value_counts().unstack(fill_value=0)
    assert (per["test"] == 1).all()  # 8-10 images per landmark: 1% rounds to 0, the minimum of 1 applies
    assert set(out["split"]) == {"train", "val", "test"}
    assert abs(per["val"].sum() / (per["val"].sum() + per["train"].sum()) - 0.2) < 0.03


def test_labels_that_are_not_whole_numbers_are_reported_never_coerced_or_dropped(tmp_path):
    rows = make_rows({1000: 3, 1001: 2})
    bad = pd.DataFrame([["a" * 16, "u", "abc"], ["b" * 16, "u", "1001.5"], ["c" * 16, "u", "1e3"], ["d" * 16, "u", ""]],
                       columns=["id", "url", "landmark_id"])
    sample = read_sample(write_csv(tmp_path / "train.csv", pd.concat([rows, bad])), 1000, 2000)
    assert sorted(sample.rows["id"]) == sorted(rows["id"])  # 1001.5 is not landmark 1001, 1e3 not 1000
    rejected = sample.rejected.set_index("id")
    assert list(rejected["reason"]) == ["bad_landmark_id"] * 4
    assert rejected.loc["b" * 16, "detail"] == "landmark_id=1001.5" and rejected.loc["a" * 16, "landmark_id"] == ""
    assert sample.counts_all.to_dict() == {1000: 3, 1001: 2}
