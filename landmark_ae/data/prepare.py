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
downloader (sources/http.py) or streamed tar shards (sources/tar.py) -- and process_rows does the rest
the same way for all of them: the Journal says what is still to do and records what is done, a
DecodePool of threads decodes, resizes and stores the images (atomic writes).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from landmark_ae.common import SPLITS
from landmark_ae.config import enum_value
from landmark_ae.data.images import ImageError, decode_array, resized_jpeg
from landmark_ae.data.journal import DONE_JOURNAL, Journal, read_journal
from landmark_ae.data.sources import Results, make_source, resolve_source
from landmark_ae.data.splits import Sample, check_landmark_range, read_sample, split_rows
from landmark_ae.runs import atomic_path, write_bytes_atomic, write_json_atomic, write_manifest, write_run_record

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["id", "landmark_id", "path", "width", "height"]
# failures.csv of a prepare run: the rows dropped, by fetch, decode or sampling (splits.py's rejected)
PREPARE_FAILURE_COLUMNS = ["id", "landmark_id", "split", "reason", "detail"]


def sample_and_split(cfg: DictConfig, csv_path: Path, run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The split table; computed once per run dir (splits.csv), so a resumed run keeps its split."""
    splits_path = run_dir / "splits.csv"
    rejected_path = run_dir / "rejected.csv"
    if splits_path.is_file():
        rows = pd.read_csv(splits_path, dtype={"id": str, "url": str, "file": str}, keep_default_na=False)
        rejected = (pd.read_csv(rejected_path, dtype={"id": str}, keep_default_na=False) if rejected_path.is_file()
                    else pd.DataFrame(columns=["id", "landmark_id", "reason", "detail"]))
        if "detail" not in rejected.columns:  # runs from before the column existed
            rejected["detail"] = ""
        log.info("resuming: %d sampled rows from %s", len(rows), splits_path)
        return rows, rejected
    d = cfg.data
    if enum_value(d.source) == "folder":  # its own listing and hash split: sources/folder.py
        from landmark_ae.data.sources.folder import write_folder_sample

        return write_folder_sample(cfg, run_dir, splits_path, rejected_path)
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

Outcomes = list[tuple[Any, "tuple[int, int] | ImageError"]]


class DecodePool:
    """`workers` threads that decode, resize, JPEG-encode and store images, BATCH at a time, into
    split_dirs[row.split]/<id>.jpg. Each finished batch is handed to on_batch in the calling thread
    (never in a pool thread: the journal is written from one thread). At most 2 * workers batches are
    in flight: put() waits while the threads catch up, so the source is read no faster than decoded."""

    def __init__(self, split_dirs: dict[str, Path], size: int, quality: int, workers: int,
                 on_batch: Callable[[Outcomes], None]):
        self.split_dirs, self.size, self.quality, self.workers = split_dirs, size, quality, workers
        self.on_batch = on_batch
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._inflight: set[Future] = set()
        self._finished: deque[Future] = deque()  # appended by the pool's threads as each batch completes
        self._batch: list[tuple[Any, bytes | Path]] = []

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)  # as ThreadPoolExecutor's own `with`: no thread left writing

    def _work(self, batch: list[tuple[Any, bytes | Path]]) -> Outcomes:
        """Runs in a pool thread: decode, resize, encode and store each image of the batch."""
        out: Outcomes = []
        for row, source in batch:
            try:
                jpeg, width, height = resized_jpeg(source, self.size, self.quality)
                write_bytes_atomic(self.split_dirs[row.split] / f"{row.id}.jpg", jpeg)
            except ImageError as exc:
                out.append((row, exc))
            else:
                out.append((row, (width, height)))
        return out

    def put(self, row: Any, source: bytes | Path) -> None:
        """Queue one image: sent to the threads with a full batch, or at once when a thread is idle."""
        self._batch.append((row, source))
        self._collect(block=False)
        if len(self._batch) >= BATCH or len(self._inflight) < self.workers:
            self._submit()
        while len(self._inflight) >= 2 * self.workers:  # the source waits while the threads catch up
            self._collect(block=True)

    def drain(self) -> None:
        """Send what is queued and hand over every batch still in flight."""
        if self._batch:
            self._submit()
        while self._inflight:
            self._collect(block=True)

    def _submit(self) -> None:
        with signals_deferred():
            future = self._pool.submit(self._work, self._batch)
            future.add_done_callback(self._finished.append)
        self._inflight.add(future)
        self._batch = []

    def _collect(self, block: bool) -> None:
        """Hand over the finished batches; block: wait for one first."""
        if block:
            with signals_deferred():
                ready, _ = wait(self._inflight, return_when=FIRST_COMPLETED)
            for future in ready:
                self._hand_over(future)
        while self._finished:
            self._hand_over(self._finished.popleft())

    def _hand_over(self, future: Future) -> None:
        """Once per batch (a future can be both waited for and queued)."""
        if future in self._inflight:
            self._inflight.remove(future)
            self.on_batch(future.result())


def split_dirs_of(run_dir: Path) -> dict[str, Path]:
    """Each split's image folder, created, without the temp files of a run killed mid-write."""
    dirs = {split: run_dir / split for split in SPLITS}
    for folder in dirs.values():
        folder.mkdir(exist_ok=True)
        for stale in folder.glob(".*.tmp"):
            stale.unlink()
    return dirs


def feed(results: Iterable[tuple[Any, bytes | Path | ImageError]], todo: list, pool: DecodePool,
         journal: Journal, advance: Callable[[int], None]) -> set[str]:
    """The source's results into the pool (failed fetches straight into the journal); returns the
    ids it gave. A row it gives twice counts once (the first result), a row not asked for not at all."""
    wanted = {r.id for r in todo}
    seen: set[str] = set()
    for row, result in results:
        if row.id not in wanted or row.id in seen:
            continue
        seen.add(row.id)
        if isinstance(result, ImageError):
            journal.failed(row, result)
            advance(1)
        else:
            pool.put(row, result)
    return seen


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

    journal = Journal(run_dir, permanent)
    todo = journal.todo(rows)
    split_dirs = split_dirs_of(run_dir)
    skipped = len(rows) - len(todo) - len(journal.failures)
    if skipped or journal.failures:
        log.info("%d images already prepared, %d known to fail, %d to go", skipped, len(journal.failures), len(todo))
    start = time.perf_counter()
    with journal, progress_bar(progress, _rate_column()) as bar:
        task = bar.add_task(description, total=len(todo), status="")

        def advance(n: int) -> None:
            bar.update(task, advance=n, status=journal.status())

        def on_batch(outcomes: Outcomes) -> None:
            journal.record(outcomes)
            advance(len(outcomes))

        with DecodePool(split_dirs, size, quality, workers, on_batch) as pool:
            seen = feed(results(todo), todo, pool, journal, advance)
            pool.drain()
        for row in todo:
            if row.id not in seen:
                journal.failed(row, ImageError("missing", "the source gave no result"))
                advance(1)
    if todo:
        log_rate(len(todo), journal.reasons, time.perf_counter() - start)
    return journal.stored, journal.failures


def log_rate(n_todo: int, reasons: Counter, elapsed: float) -> None:
    """The image stage's one line (scripts/bench_prepare.py reads its images/s)."""
    n_failed = sum(reasons.values())
    log.info("prepared %d images in %.1fs (%.1f images/s), %d failed%s", n_todo - n_failed, elapsed,
             (n_todo - n_failed) / max(elapsed, 1e-9), n_failed, f" {dict(reasons)}" if reasons else "")


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
    done = read_journal(run_dir / DONE_JOURNAL)
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

    failed = pd.DataFrame(failures, columns=PREPARE_FAILURE_COLUMNS)
    if len(rejected):
        failed = pd.concat([failed, rejected.assign(split="")[PREPARE_FAILURE_COLUMNS]], ignore_index=True)
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
