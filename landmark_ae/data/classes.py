"""Class names of a prepared dataset: what `query`, `serve` and `evaluate` show beside a landmark_id.

    <prepare run>/classes.csv          id, name, count (prepare data=folder writes it)
    <source root>/landmarks.csv        landmark_id, name (a GLDv2-layout root such as landmarks10; the
                                       prepare run's dataset.json records its source_root)
A dataset with neither has no names: answers carry an empty class_name. Torch- and pandas-free: it is
on query's fast path.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

CLASSES_FILE = "classes.csv"
LANDMARK_NAMES_FILE = "landmarks.csv"


def _read_names(path: Path, id_column: str) -> dict[int, str]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or id_column not in reader.fieldnames or "name" not in reader.fieldnames:
            raise ValueError(f"no {id_column},name columns")
        return {int(row[id_column]): row["name"] for row in reader if row[id_column].strip().lstrip("-").isdigit()}


def class_names(data_dir: Path | str | None) -> dict[int, str]:
    """landmark_id -> name for the prepare run data_dir; {} where it records none (or is gone)."""
    if not data_dir:
        return {}
    data_dir = Path(data_dir)
    candidates = [(data_dir / CLASSES_FILE, "id")]
    try:
        source_root = json.loads((data_dir / "dataset.json").read_text(encoding="utf-8")).get("source_root")
    except (OSError, ValueError, AttributeError):
        source_root = None
    if source_root:
        candidates.append((Path(source_root) / LANDMARK_NAMES_FILE, "landmark_id"))
    for path, id_column in candidates:
        if path.is_file():
            try:
                return _read_names(path, id_column)
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                log.warning("%s is unreadable (%s): answers carry no class names", path, exc)
                return {}
    return {}
