"""`landmark-ae prepare`: sampled, split, resized images in a prepare run dir.

Layout of a prepared dataset (the run dir):
    splits.csv                      sampled rows with their split (written once, reused on resume)
    {train,val,test}/<id>.jpg       resized images
    {train,val,test}.csv            manifests: id, landmark_id, path, width, height (original size)
    {train,val,test}.npy            uint8 (N, S, S, 3) arrays in manifest order, decoded from the stored
                                    files once here, a chunk at a time (never whole in memory)
    failures.csv                    dropped rows: id, landmark_id, split, reason, detail
    done.log                        journal of finished images (id, width, height), for resuming
    permanent_failures.log          (http, tar) rows that a rerun does not fetch again: id, reason, detail
    source/                         (synthetic) generated images; (http, tar) a downloaded train.csv
    tar_shards.jsonl                (tar) verified shards and the sampled ids each held
    figure1_distribution.png, dataset.json, run.json

Every file is written atomically; a rerun with resume=<run dir> skips finished images.

Sources (data.source) differ only in where the encoded bytes come from: each is a function from the
rows still to do to an iterable of (row, bytes | Path | ImageError) -- local files, the aiohttp
downloader (download.py) or streamed tar shards (tarsource.py) -- and process_rows does the rest
(decode + resize in a thread pool, atomic writes, the journal) the same way for all of them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from landmark_ae.config import enum_value
from landmark_ae.data.images import ImageError, decode_array, resized_jpeg
from landmark_ae.data.sources import Results, make_source, resolve_source
from landmark_ae.data.splits import ID_PATTERN, Sample, check_landmark_range, read_sample, split_rows
from landmark_ae.runs import atomic_path, write_bytes_atomic, write_json_atomic, write_manifest, write_run_record

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["id", "landmark_id", "path", "width", "height"]
FAILURE_COLUMNS = ["id", "landmark_id", "split", "reason", "detail"]

PERMANENT_JOURNAL = "permanent_failures.log"
# The splits, as landmark_ae.data.prepared.SPLITS: not imported from there, as that module imports
# torch (1.5 s of a prepare run's start, for three names).
SPLITS = ("train", "val", "test")


def sample_and_split(cfg: DictConfig, csv_path: Path, run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The split table; computed once per run dir (splits.csv), so a resumed run keeps its split."""
    splits_path = run_dir / "splits.csv"
    rejected_path = run_dir / "rejected.csv"
    if splits_path.is_file():
        rows = pd.read_csv(splits_path, dtype={"id": str, "url": str}, keep_default_na=False)
        rejected = (pd.read_csv(rejected_path, dtype={"id": str}, keep_default_na=False) if rejected_path.is_file()
                    else pd.DataFrame(columns=["id", "landmark_id", "reason", "detail"]))
        if "detail" not in rejected.columns:  # runs from before the column existed
            rejected["detail"] = ""
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


def read_permanent(path: Path) -> dict[str, tuple[str, str]]:
    """id -> (reason, detail) of failures that a rerun does not fetch again; torn lines ignored."""
    out: dict[str, tuple[str, str]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and ID_PATTERN.match(parts[0]):
                out[parts[0]] = (parts[1], parts[2])
    return out


def _rate_column():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):  # type: ignore[override]
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} img/s" if speed else "- img/s", style="progress.data.speed")

    return Rate()


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while inside concurrent.futures: the exception their handlers raise,
    arriving while `wait` or `submit` holds a future's lock, would leave that lock held and hang the
    pool's shutdown. Blocked, the signal is delivered as soon as the call returns (the calls here
    wait for a decode of a few milliseconds at most)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# Images per task handed to the decode threads. A future per image cost the main thread (submit,
# wait, signal masks, the journal's flush) about a fifth of what a small image's decode costs the
# threads; a batch pays that once for BATCH images. Threads that run out of work get whatever is
# pending at once, so a slow source (http) is not held back to fill a batch.
BATCH = 16
# Rows decoded and written per step of a {split}.npy: the arrays' memory is one chunk, whatever N.
NPY_CHUNK = 512


def process_rows(
    rows: pd.DataFrame, run_dir: Path, results: Results, size: int, quality: int, workers: int, progress: bool,
    permanent: frozenset[str] = frozenset(), description: str = "prepare images",
) -> tuple[dict[str, tuple[int, int]], list[dict]]:
    """Decode, resize and store every row not yet in the journal, from whatever `results` yields.

    Returns the original (width, height) of each image stored now, by id, and the failures. No arrays
    are kept: write_split_outputs decodes every split's stored files into its .npy, a chunk at a time.
    Failures whose reason is in `permanent` go to permanent_failures.log and are not fetched again by a
    rerun (they are reported again); any other failure is retried by a rerun.
    """
    from landmark_ae.ui import progress_bar

    journal_path = run_dir / "done.log"
    permanent_path = run_dir / PERMANENT_JOURNAL
    done = read_journal(journal_path)
    known_bad = read_permanent(permanent_path) if permanent else {}
    failures: list[dict] = []

    def failure(row: Any, reason: str, detail: str = "") -> None:
        failures.append({"id": row.id, "landmark_id": row.landmark_id, "split": row.split,
                         "reason": reason, "detail": detail[:200]})

    todo = []
    for r in rows.itertuples(index=False):
        if not ID_PATTERN.match(str(r.id)):  # never build a path from an unchecked id
            failure(r, "invalid_id")
        elif r.id in done and (run_dir / r.split / f"{r.id}.jpg").is_file():
            continue
        elif r.id in known_bad and known_bad[r.id][0] in permanent:
            failure(r, *known_bad[r.id])
        else:
            todo.append(r)
    split_dirs = {}
    for split in SPLITS:
        split_dirs[split] = run_dir / split
        split_dirs[split].mkdir(exist_ok=True)
        for stale in split_dirs[split].glob(".*.tmp"):  # left by a run killed mid-write
            stale.unlink()
    stored: dict[str, tuple[int, int]] = {}
    skipped = len(rows) - len(todo) - len(failures)
    if skipped or failures:
        log.info("%d images already prepared, %d known to fail, %d to go", skipped, len(failures), len(todo))

    def work(batch: list[tuple[Any, bytes | Path]]) -> list[tuple[Any, tuple[int, int] | ImageError]]:
        """Runs in a pool thread: decode, resize, encode and store each image of the batch."""
        out: list[tuple[Any, tuple[int, int] | ImageError]] = []
        for row, source in batch:
            try:
                jpeg, width, height = resized_jpeg(source, size, quality)
                write_bytes_atomic(split_dirs[row.split] / f"{row.id}.jpg", jpeg)
            except ImageError as exc:
                out.append((row, exc))
            else:
                out.append((row, (width, height)))
        return out

    reasons: Counter = Counter()
    start = time.perf_counter()
    seen: set[str] = set()
    with open(journal_path, "a", encoding="utf-8") as journal, \
            open(permanent_path if permanent else os.devnull, "a", encoding="utf-8") as bad_journal, \
            progress_bar(progress, _rate_column()) as bar, ThreadPoolExecutor(max_workers=workers) as pool:
        task = bar.add_task(description, total=len(todo), status="")

        def fail(row: Any, exc: ImageError) -> None:
            failure(row, exc.reason, exc.detail)
            reasons[exc.reason] += 1
            if exc.reason in permanent:
                bad_journal.write(f"{row.id}\t{exc.reason}\t{exc.detail[:200].replace(chr(9), ' ').replace(chr(10), ' ')}\n")
                bad_journal.flush()

        def advance(n: int = 1) -> None:
            status = ""
            if reasons:
                status = f"{sum(reasons.values())} failed (" + ", ".join(f"{k} {v}" for k, v in reasons.most_common(4)) + ")"
            bar.update(task, advance=n, status=status)

        inflight: set[Future] = set()
        finished: deque[Future] = deque()  # appended by the pool's threads as each batch completes
        batch: list[tuple[Any, bytes | Path]] = []

        def record(future: Future) -> None:
            """A finished batch into the journal (once; a future can be both waited for and queued)."""
            if future not in inflight:
                return
            inflight.remove(future)
            outcomes = future.result()
            for row, outcome in outcomes:
                if isinstance(outcome, ImageError):
                    fail(row, outcome)
                else:
                    stored[row.id] = done[row.id] = outcome
                    journal.write(f"{row.id},{outcome[0]},{outcome[1]}\n")
            journal.flush()
            advance(len(outcomes))

        def submit() -> None:
            nonlocal batch
            with signals_deferred():
                future = pool.submit(work, batch)
                future.add_done_callback(finished.append)
            inflight.add(future)
            batch = []

        def collect(block: bool) -> None:
            if block:
                with signals_deferred():
                    ready, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for future in ready:
                    record(future)
            while finished:
                record(finished.popleft())

        wanted = {r.id for r in todo}
        for row, result in results(todo):
            if row.id not in wanted or row.id in seen:
                continue  # a source that yields a row twice: the first result counts
            seen.add(row.id)
            if isinstance(result, ImageError):
                fail(row, result)
                advance()
                continue
            batch.append((row, result))
            collect(block=False)
            if len(batch) >= BATCH or len(inflight) < workers:  # a full batch, or a thread with nothing to do
                submit()
            while len(inflight) >= 2 * workers:  # the source waits while the threads catch up
                collect(block=True)
        if batch:
            submit()
        while inflight:
            collect(block=True)
        for row in todo:
            if row.id not in seen:
                fail(row, ImageError("missing", "the source gave no result"))
                advance()
    if todo:
        elapsed = time.perf_counter() - start
        n_failed = sum(reasons.values())
        log.info("prepared %d images in %.1fs (%.1f images/s), %d failed%s",
                 len(todo) - n_failed, elapsed, (len(todo) - n_failed) / max(elapsed, 1e-9), n_failed,
                 f" {dict(reasons)}" if reasons else "")
    return stored, failures


def write_array_file(dest: Path, paths: list[Path], size: int, pool: ThreadPoolExecutor, workers: int = 1) -> None:
    """dest (.npy): the stored images at `paths` decoded, uint8 (N, size, size, 3), in that order.

    Written incrementally, never whole in memory: np.lib.format.open_memmap creates the temp file
    (`.<name>.*.tmp` beside dest, as every atomic write here) with np.save's header, then NPY_CHUNK rows
    at a time are decoded by the pool straight into a mapping of just those rows, flushed and unmapped;
    the finished file replaces dest in one rename. Byte for byte what np.save(dest, array) writes.
    """
    row_shape = (size, size, 3)
    with atomic_path(dest) as tmp:
        header = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *row_shape))
        offset = header.offset
        del header  # nothing written through it: the file has its header and full size
        for first in range(0, len(paths), NPY_CHUNK):
            chunk = paths[first:first + NPY_CHUNK]
            rows = np.memmap(tmp, dtype=np.uint8, mode="r+", offset=offset + first * int(np.prod(row_shape)),
                             shape=(len(chunk), *row_shape))

            def fill(span: range, rows: np.ndarray = rows, chunk: list[Path] = chunk) -> None:
                for i in span:
                    rows[i] = decode_array(chunk[i])

            step = -(-len(chunk) // max(1, workers))
            for _ in pool.map(fill, [range(a, min(a + step, len(chunk))) for a in range(0, len(chunk), step)]):
                pass
            rows.flush()
            del rows


def write_split_outputs(rows: pd.DataFrame, run_dir: Path, size: int, workers: int = 1) -> dict[str, int]:
    """Manifests and uint8 arrays per split, in the same order (sorted by landmark_id, id); the arrays
    decoded from the stored files by `workers` threads."""
    done = read_journal(run_dir / "done.log")
    counts = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for split in SPLITS:
            part = rows[(rows["split"] == split) & rows["id"].isin(done.keys())]
            part = part.sort_values(["landmark_id", "id"], kind="mergesort")
            ids = part["id"].tolist()
            write_array_file(run_dir / f"{split}.npy", [run_dir / split / f"{i}.jpg" for i in ids], size, pool, workers)
            manifest = pd.DataFrame({
                "id": part["id"].to_numpy(),
                "landmark_id": part["landmark_id"].to_numpy(),
                "path": [f"{split}/{i}.jpg" for i in ids],
                "width": [done[i][0] for i in ids],
                "height": [done[i][1] for i in ids],
            }, columns=MANIFEST_COLUMNS)
            with atomic_path(run_dir / f"{split}.csv") as tmp:
                manifest.to_csv(tmp, index=False)
            counts[split] = len(part)
    return counts


def run_prepare(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    check_landmark_range(cfg.data.landmark_min, cfg.data.landmark_max)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    write_run_record(run_dir, "prepare", "running", data=cfg.data.name)
    root, csv_path = resolve_source(cfg, run_dir, cfg.progress)
    results, permanent, tar = make_source(cfg, root, run_dir)  # checks the source's settings first
    rows, rejected = sample_and_split(cfg, csv_path, run_dir)
    source = enum_value(cfg.data.source)
    what = {"http": "download images", "tar": "read tar shards"}.get(source, "prepare images")
    _, failures = process_rows(rows, run_dir, results, cfg.data.image_size, cfg.jpeg_quality,
                               cfg.workers, cfg.progress, permanent=permanent, description=what)
    counts = write_split_outputs(rows, run_dir, cfg.data.image_size, cfg.workers)

    failed = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    if len(rejected):
        failed = pd.concat([failed, rejected.assign(split="")[FAILURE_COLUMNS]], ignore_index=True)
    with atomic_path(run_dir / "failures.csv") as tmp:
        failed.to_csv(tmp, index=False)
    reasons = dict(sorted(Counter(failed["reason"]).items()))
    # Failures a rerun may fix (timeouts, 5xx, a missing local file): `resume=` retries just these,
    # even once the run is complete. Permanent ones (404, not an image, bad rows) stay as they are.
    retryable = sum(1 for f in failures if f["reason"] not in permanent)
    summary = {
        "data": data_cfg,
        "source": source,
        "source_root": str(cfg.data.tar.base) if tar is not None else (str(root) if root else None),
        "csv": str(csv_path),
        "image_size": cfg.data.image_size,
        "landmarks": int(rows["landmark_id"].nunique()),
        "counts": counts,
        "failed": int(len(failed)),
        "failure_reasons": reasons,
        "retryable": retryable,
    }
    if tar is not None:
        summary["tar_shards"] = {k: v for k, v in tar.report.items() if k != "skipped"}
        if tar.report["failed"]:
            log.warning("tar shards that failed (their rows are retried by a rerun): %s", tar.report["failed"])
    write_json_atomic(run_dir / "dataset.json", summary)
    write_manifest(run_dir, [*(f"{s}.{ext}" for s in SPLITS for ext in ("npy", "csv")), "dataset.json", "failures.csv"])
    write_run_record(run_dir, "prepare", "complete", data=cfg.data.name, counts=counts, retryable=retryable)
    log.info("prepared dataset in %s: %s; %d dropped %s", run_dir, counts, len(failed), reasons or "")
    if retryable:
        log.info("%d of them may succeed on a retry: landmark-ae prepare resume=%s", retryable, run_dir)
    return {
        "run_dir": run_dir,
        "train": counts["train"],
        "val": counts["val"],
        "test": counts["test"],
        "failed": len(failed),
        "retryable": retryable,
        **{f"failed_{k}": v for k, v in reasons.items()},
    }
