"""`landmark-ae prepare`: sampled, split, resized images in a prepare run dir.

Layout of a prepared dataset (the run dir):
    splits.csv                      sampled rows with their split (written once, reused on resume)
    {train,val,test}/<id>.jpg       resized images
    {train,val,test}.csv            manifests: id, landmark_id, path, width, height (original size)
    {train,val,test}.npy            uint8 (N, S, S, 3) arrays in manifest order, decoded once here
    failures.csv                    dropped rows: id, landmark_id, split, reason, detail
    done.log                        journal of finished images (id, width, height), for resuming
    figure1_distribution.png, dataset.json, run.json

Every file is written atomically; a rerun with resume=<run dir> skips finished images.
"""

from __future__ import annotations

import csv
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from landmark_ae.artifacts import atomic_path, read_json, write_json_atomic, write_run_record, write_text_atomic
from landmark_ae.errors import UserError
from landmark_ae.images import ImageError, Prepared, load_array, prepare_image, save_prepared
from landmark_ae.splits import Sample, read_sample, split_rows

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["id", "landmark_id", "path", "width", "height"]
FAILURE_COLUMNS = ["id", "landmark_id", "split", "reason", "detail"]

# Fetch(row) -> the encoded image bytes or a local path; raises ImageError for a failed fetch.
Fetch = Callable[[Any], "bytes | Path"]


def gldv2_image_path(root: Path, image_id: str) -> Path:
    """GLDv2's extracted-archive layout: images/a/b/c/<id>.jpg (id already validated as hex)."""
    return root / "images" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def resolve_source(cfg: DictConfig, run_dir: Path, progress: bool = True) -> tuple[Path, Path]:
    """(images root, train.csv) for the configured source; generates the built-in data if asked."""
    data = cfg.data
    if data.source == "synthetic":
        from landmark_ae.synthetic import SyntheticSpec, generate
        from landmark_ae.ui import progress_bar

        s = data.synthetic
        spec = SyntheticSpec(
            n_landmarks=s.n_landmarks, n_images=s.n_images, min_per_landmark=s.min_per_landmark,
            width=s.width, height=s.height, first_landmark_id=data.landmark_min, seed=s.seed,
        )
        root = run_dir / "source"
        with progress_bar(progress) as bar:
            task = bar.add_task("generate synthetic landmarks", total=spec.n_images, status="")
            try:
                csv_path = generate(root, spec, progress=lambda done, total: bar.update(task, completed=done))
            except ValueError as exc:
                raise UserError(f"data.synthetic: {exc}") from None
        return root, Path(csv_path)
    if data.root is None:
        raise UserError("data.root is required: the folder holding GLDv2's images/ (and train.csv)")
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise UserError(f"data.root {root} does not exist: point it at a folder holding images/a/b/c/<id>.jpg")
    csv_path = Path(data.csv).expanduser() if data.csv else root / "train.csv"
    return root, csv_path


def sample_and_split(cfg: DictConfig, csv_path: Path, run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The split table; computed once per run dir (splits.csv), so a resumed run keeps its split."""
    splits_path = run_dir / "splits.csv"
    rejected_path = run_dir / "rejected.csv"
    if splits_path.is_file():
        rows = pd.read_csv(splits_path, dtype={"id": str, "url": str}, keep_default_na=False)
        rejected = pd.read_csv(rejected_path, dtype={"id": str}, keep_default_na=False) if rejected_path.is_file() else pd.DataFrame(columns=["id", "landmark_id", "reason"])
        log.info("resuming: %d sampled rows from %s", len(rows), splits_path)
        return rows, rejected
    d = cfg.data
    sample: Sample = read_sample(csv_path, d.landmark_min, d.landmark_max, d.csv_chunksize)
    rows = split_rows(sample.rows, d.test_fraction, d.val_fraction, d.seed)
    log.info(
        "sampled %d rows of %d landmarks with landmark_id in [%d, %d) from %s",
        len(rows), rows["landmark_id"].nunique(), d.landmark_min, d.landmark_max, csv_path,
    )
    from landmark_ae.figures import plot_distribution

    sampled = rows["landmark_id"].value_counts().to_numpy()
    plot_distribution(sample.counts_all.to_numpy(), sampled, run_dir / "figure1_distribution.png",
                      f"{d.name}: images per landmark, original vs sampled")
    with atomic_path(rejected_path) as tmp:
        sample.rejected.to_csv(tmp, index=False)
    with atomic_path(splits_path) as tmp:  # last: its presence means the split is final
        rows.to_csv(tmp, index=False)
    return rows, sample.rejected


def read_journal(path: Path) -> dict[str, tuple[int, int]]:
    """Finished images from done.log; a torn last line (killed mid-append) is ignored."""
    done: dict[str, tuple[int, int]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split(",")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                done[parts[0]] = (int(parts[1]), int(parts[2]))
    return done


def process_rows(
    rows: pd.DataFrame, run_dir: Path, fetch: Fetch, size: int, quality: int, workers: int, progress: bool,
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Fetch, decode, resize and store every row not yet in the journal.

    Returns the arrays of the images processed now (the rest are read back from disk) and the failures.
    """
    from landmark_ae.ui import progress_bar

    journal_path = run_dir / "done.log"
    done = read_journal(journal_path)
    todo = [r for r in rows.itertuples(index=False) if not (r.id in done and (run_dir / r.split / f"{r.id}.jpg").is_file())]
    for split in SPLITS:
        (run_dir / split).mkdir(exist_ok=True)
        for stale in (run_dir / split).glob(".*.tmp"):  # left by a run killed mid-write
            stale.unlink()
    arrays: dict[str, np.ndarray] = {}
    failures: list[dict] = []
    if len(rows) - len(todo):
        log.info("%d images already prepared, %d to go", len(rows) - len(todo), len(todo))

    def work(row: Any) -> Prepared:
        prepared = prepare_image(fetch(row), size, quality)
        save_prepared(prepared, run_dir / row.split / f"{row.id}.jpg")
        return prepared

    start = time.perf_counter()
    with open(journal_path, "a", encoding="utf-8") as journal, progress_bar(progress) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        task = bar.add_task("prepare images", total=len(todo), status="")
        futures = {pool.submit(work, row): row for row in todo}
        for future in as_completed(futures):
            row = futures[future]
            try:
                prepared = future.result()
            except ImageError as exc:
                failures.append({"id": row.id, "landmark_id": row.landmark_id, "split": row.split,
                                 "reason": exc.reason, "detail": exc.detail[:200]})
            else:
                arrays[row.id] = prepared.array
                done[row.id] = (prepared.width, prepared.height)
                journal.write(f"{row.id},{prepared.width},{prepared.height}\n")
                journal.flush()
            bar.update(task, advance=1, status=f"{len(failures)} failed" if failures else "")
    if todo:
        elapsed = time.perf_counter() - start
        log.info("prepared %d images in %.1fs (%.0f images/s), %d failed",
                 len(todo) - len(failures), elapsed, len(todo) / max(elapsed, 1e-9), len(failures))
    return arrays, failures


def write_split_outputs(rows: pd.DataFrame, run_dir: Path, fresh: dict[str, np.ndarray], size: int) -> dict[str, int]:
    """Manifests and uint8 arrays per split, in the same order (sorted by landmark_id, id)."""
    done = read_journal(run_dir / "done.log")
    counts = {}
    for split in SPLITS:
        part = rows[(rows["split"] == split) & rows["id"].isin(done.keys())]
        part = part.sort_values(["landmark_id", "id"], kind="mergesort")
        array = np.zeros((len(part), size, size, 3), dtype=np.uint8)
        for i, image_id in enumerate(part["id"]):
            array[i] = fresh[image_id] if image_id in fresh else load_array(run_dir / split / f"{image_id}.jpg")
        manifest = pd.DataFrame({
            "id": part["id"].to_numpy(),
            "landmark_id": part["landmark_id"].to_numpy(),
            "path": [f"{split}/{i}.jpg" for i in part["id"]],
            "width": [done[i][0] for i in part["id"]],
            "height": [done[i][1] for i in part["id"]],
        }, columns=MANIFEST_COLUMNS)
        with atomic_path(run_dir / f"{split}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, array)
        with atomic_path(run_dir / f"{split}.csv") as tmp:
            manifest.to_csv(tmp, index=False)
        counts[split] = len(part)
    return counts


def local_fetch(root: Path) -> Fetch:
    def fetch(row: Any) -> Path:
        path = gldv2_image_path(root, row.id)
        if not path.is_file():
            raise ImageError("missing", str(path))
        return path

    return fetch


def run_prepare(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    if cfg.data.landmark_min >= cfg.data.landmark_max:
        raise UserError(
            f"empty landmark_id range [{cfg.data.landmark_min}, {cfg.data.landmark_max}): "
            "set data.landmark_min below data.landmark_max"
        )
    previous = run_dir / "dataset.json"
    if previous.is_file() and read_json(previous).get("data", {}).get("name") not in (None, cfg.data.name):
        raise UserError(f"{run_dir} holds a prepared {read_json(previous)['data']['name']} dataset; resume it with data={read_json(previous)['data']['name']}")
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    write_run_record(run_dir, "prepare", "running", data=cfg.data.name)
    root, csv_path = resolve_source(cfg, run_dir, cfg.progress)
    rows, rejected = sample_and_split(cfg, csv_path, run_dir)
    fresh, failures = process_rows(rows, run_dir, local_fetch(root), cfg.data.image_size, cfg.jpeg_quality,
                                   cfg.workers, cfg.progress)
    counts = write_split_outputs(rows, run_dir, fresh, cfg.data.image_size)

    failed = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    if len(rejected):
        failed = pd.concat([failed, rejected.assign(split="", detail="")[FAILURE_COLUMNS]], ignore_index=True)
    with atomic_path(run_dir / "failures.csv") as tmp:
        failed.to_csv(tmp, index=False)
    reasons = dict(sorted(Counter(failed["reason"]).items()))
    summary = {
        "data": data_cfg,
        "source_root": str(root),
        "csv": str(csv_path),
        "image_size": cfg.data.image_size,
        "landmarks": int(rows["landmark_id"].nunique()),
        "counts": counts,
        "failed": int(len(failed)),
        "failure_reasons": reasons,
    }
    write_json_atomic(run_dir / "dataset.json", summary)
    write_run_record(run_dir, "prepare", "complete", data=cfg.data.name, counts=counts)
    log.info("prepared dataset in %s: %s; %d dropped %s", run_dir, counts, len(failed), reasons or "")
    return {
        "run_dir": run_dir,
        "train": counts["train"],
        "val": counts["val"],
        "test": counts["test"],
        "failed": len(failed),
        **{f"failed_{k}": v for k, v in reasons.items()},
    }
