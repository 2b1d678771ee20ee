"""Sample a GLDv2 train.csv by landmark_id range and split it into train / val / test.

The seed study's protocol: keep landmark_id in [lo, hi); test = a fraction (1%) of each
landmark's images with at least one per landmark that has two or more (a query needs a relevant
image left in the database); the rest split train/val (80/20) per landmark. Seeded and
independent of the CSV's row order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from landmark_ae.errors import UserError

ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
REQUIRED_COLUMNS = ("id", "landmark_id")


@dataclass
class Sample:
    rows: pd.DataFrame  # id, url, landmark_id for the sampled range (valid, unique ids)
    rejected: pd.DataFrame  # id, landmark_id, reason (invalid_id, duplicate_id, bad_landmark_id), detail
    counts_all: pd.Series  # images per landmark in the whole CSV (for Figure 1)


def check_landmark_range(landmark_min: int, landmark_max: int) -> None:
    if landmark_min >= landmark_max:
        raise UserError(
            f"empty landmark_id range [{landmark_min}, {landmark_max}): "
            "set data.landmark_min below data.landmark_max"
        )


def read_sample(csv_path: Path | str, landmark_min: int, landmark_max: int, chunksize: int = 200_000) -> Sample:
    """Stream the CSV in chunks (the real one has 4.1M rows) and keep the configured range."""
    check_landmark_range(landmark_min, landmark_max)
    path = Path(csv_path)
    if not path.is_file():
        raise UserError(f"CSV {path} not found: point data.csv (or data.root) at GLDv2's train.csv")
    kept, bad_labels, counts = [], [], None
    try:
        reader = pd.read_csv(path, chunksize=chunksize, dtype={"id": str, "url": str, "landmark_id": str},
                             keep_default_na=False)
        for i, chunk in enumerate(reader):
            if i == 0:
                missing = [c for c in REQUIRED_COLUMNS if c not in chunk.columns]
                if missing:
                    raise UserError(
                        f"{path} has no {'/'.join(missing)} column (found: {', '.join(map(str, chunk.columns))}); "
                        "expected GLDv2's train.csv with id,url,landmark_id"
                    )
            # Only whole numbers are labels: "abc", "1001.5" or "1e3" are reported, never coerced or dropped.
            text = chunk["landmark_id"].astype(str).str.strip()
            whole = text.str.fullmatch(r"-?[0-9]{1,18}")
            if not whole.all():
                bad = chunk.loc[~whole, ["id"]].assign(landmark_id="", reason="bad_landmark_id",
                                                       detail="landmark_id=" + text[~whole].str.slice(0, 60))
                bad_labels.append(bad)
            chunk = chunk[whole].assign(landmark_id=text[whole].astype(np.int64))
            vc = chunk["landmark_id"].value_counts()
            counts = vc if counts is None else counts.add(vc, fill_value=0)
            inside = chunk[(chunk["landmark_id"] >= landmark_min) & (chunk["landmark_id"] < landmark_max)]
            kept.append(inside[[c for c in ("id", "url", "landmark_id") if c in inside.columns]])
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty: expected GLDv2's train.csv with id,url,landmark_id") from None
    rows = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=["id", "url", "landmark_id"])
    if "url" not in rows.columns:
        rows["url"] = ""
    rows["id"] = rows["id"].astype(str).str.strip()
    rows["landmark_id"] = rows["landmark_id"].astype(np.int64)

    valid = rows["id"].map(lambda s: bool(ID_PATTERN.match(s))).astype(bool)
    duplicate = rows["id"].duplicated(keep="first") & valid
    rejected = pd.concat(
        [rows.loc[~valid, ["id", "landmark_id"]].assign(reason="invalid_id", detail=""),
         rows.loc[duplicate, ["id", "landmark_id"]].assign(reason="duplicate_id", detail=""),
         *bad_labels],
        ignore_index=True,
    )
    rows = rows[valid & ~duplicate].reset_index(drop=True)
    if rows.empty:
        raise UserError(
            f"no usable rows with landmark_id in [{landmark_min}, {landmark_max}) in {path}: "
            "widen data.landmark_min/data.landmark_max"
        )
    counts_all = (counts if counts is not None else pd.Series(dtype=float)).astype(np.int64)
    return Sample(rows=rows, rejected=rejected, counts_all=counts_all)


def _half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def split_rows(rows: pd.DataFrame, test_fraction: float, val_fraction: float, seed: int) -> pd.DataFrame:
    """Add a `split` column (train/val/test); same result for the same rows in any order."""
    rows = rows.sort_values(["landmark_id", "id"], kind="mergesort").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    split = np.empty(len(rows), dtype=object)
    for _, index in rows.groupby("landmark_id", sort=True).indices.items():
        n = len(index)
        n_test = 0 if test_fraction <= 0 or n < 2 else max(1, _half_up(test_fraction * n))
        n_val = _half_up(val_fraction * (n - n_test))
        order = index[rng.permutation(n)]
        split[order[:n_test]] = "test"
        split[order[n_test : n_test + n_val]] = "val"
        split[order[n_test + n_val :]] = "train"
    return rows.assign(split=split)
