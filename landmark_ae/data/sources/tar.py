"""source=tar: GLDv2's official images_000.tar ... images_499.tar, streamed, md5-checked, filtered.

Layout (data.tar.base):
    URL     <base>/train/images_NNN.tar and <base>/md5sum/train/md5.images_NNN.txt
            (the official base is https://s3.amazonaws.com/google-landmark)
    folder  images_NNN.tar and md5.images_NNN.txt, flat or in that same train/ md5sum/train/ layout

Which shard holds an id cannot be derived from the id, so each needed shard is streamed once
(tarfile's stream mode: nothing but the sampled members is kept, and those only in a spool file
inside the run dir until the shard's md5 is verified) and its members are matched by file name
(`a/b/c/<id>.jpg`). A shard that fails its md5 or breaks off is read again up to
data.tar.retries times, then reported: its sampled rows fail as `md5_mismatch` (their images are
never used). `tar_shards.jsonl` in the run dir records every verified shard with the sampled ids
it held, so a rerun reads only the shards it still needs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from landmark_ae.data.images import ImageError
from landmark_ae.data.sources.http import FetchError, is_url, threaded_results
from landmark_ae.errors import UserError

log = logging.getLogger(__name__)

N_SHARDS = 500
MEMBER_ID = re.compile(r"^([0-9a-f]{16})\.jpg$")
JOURNAL = "tar_shards.jsonl"


class ShardError(Exception):
    def __init__(self, reason: str, detail: str = "", retry: bool = True):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.retry = reason, detail, retry


class _Hashing:
    """A read-only stream that feeds everything read through md5."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.md5, self.bytes = raw, hashlib.md5(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.md5.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


class TarSource:
    def __init__(self, base: str, shards: Iterable[int] | None, retries: int, concurrency: int, max_bytes: int,
                 user_agent: str, timeout: float, run_dir: Path):
        if not base:
            raise UserError("data.tar.base is required for source=tar: the shards' URL prefix or local folder")
        self.remote = is_url(base)
        self.base = base.rstrip("/") if self.remote else Path(base).expanduser()
        if not self.remote and not self.base.is_dir():
            raise UserError(f"data.tar.base {base} is neither an http(s) URL nor an existing folder")
        self.shards = list(range(N_SHARDS)) if shards is None else [int(s) for s in shards]
        bad = [s for s in self.shards if not 0 <= s < N_SHARDS]
        if bad or not self.shards:
            raise UserError(f"data.tar.shards must list indices in 0..{N_SHARDS - 1} (got {bad or 'none'})")
        self.retries, self.concurrency, self.max_bytes = retries, concurrency, max_bytes
        self.user_agent, self.timeout, self.run_dir = user_agent, timeout, run_dir
        self.report: dict[str, Any] = {"read": [], "failed": {}, "unchecked": [], "skipped": []}

    # -- where things are ----------------------------------------------------------------------
    def _open(self, kind: str, index: int) -> BinaryIO:
        name = f"images_{index:03d}.tar" if kind == "tar" else f"md5.images_{index:03d}.txt"
        if self.remote:
            url = f"{self.base}/train/{name}" if kind == "tar" else f"{self.base}/md5sum/train/{name}"
            req = urllib.request.Request(url, headers={"User-Agent": self.user_agent})
            try:
                return urllib.request.urlopen(req, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                raise ShardError("missing" if exc.code in (403, 404, 410) else f"http_{exc.code}", url,
                                 retry=exc.code not in (403, 404, 410)) from None
            except (urllib.error.URLError, OSError) as exc:
                raise ShardError("connection", f"{url}: {getattr(exc, 'reason', exc)}") from None
        dirs = ([self.base, self.base / "train"] if kind == "tar"
                else [self.base, self.base / "md5sum" / "train", self.base / "train"])
        for d in dirs:
            if (d / name).is_file():
                return open(d / name, "rb")
        raise ShardError("missing", f"{name} not in {self.base}", retry=False)

    def expected_md5(self, index: int) -> str | None:
        try:
            with self._open("md5", index) as f:
                text = f.read(1 << 16).decode("utf-8", "replace")
        except ShardError:
            return None
        for line in text.splitlines():
            parts = line.split()
            names_shard = len(parts) >= 2 and parts[-1].lstrip("*").endswith(f"images_{index:03d}.tar")
            if names_shard and re.fullmatch(r"[0-9a-fA-F]{32}", parts[0]):
                return parts[0].lower()
        return None

    # -- one shard ----------------------------------------------------------------------------
    def _scan(self, index: int, wanted: dict[str, Any], spool: BinaryIO) -> tuple[list, str]:
        """Stream shard `index`; spool the wanted members; (found entries, md5 of the whole stream)."""
        found: list[tuple[Any, int, int, ImageError | None]] = []
        with self._open("tar", index) as raw:
            reader = _Hashing(raw)
            try:
                with tarfile.open(fileobj=reader, mode="r|") as tf:  # type: ignore[call-overload]
                    for member in tf:
                        m = MEMBER_ID.match(PurePosixPath(member.name).name)
                        if not m or m.group(1) not in wanted or not member.isfile():
                            continue
                        row = wanted[m.group(1)]
                        if member.size > self.max_bytes:
                            found.append((row, 0, 0, ImageError("too_big", f"{member.size} bytes in shard {index:03d}")))
                            continue
                        f = tf.extractfile(member)
                        data = f.read() if f is not None else b""
                        offset = spool.tell()
                        spool.write(data)
                        found.append((row, offset, len(data), None))
                reader.drain()  # the md5 covers the padding after the tar's end blocks too
            except (tarfile.TarError, EOFError) as exc:
                raise ShardError("corrupt_shard", f"images_{index:03d}.tar: {exc}") from None
            except OSError as exc:
                raise ShardError("connection", f"images_{index:03d}.tar: {exc}") from None
        return found, reader.md5.hexdigest()

    def read_shard(self, index: int, wanted: dict[str, Any], emit: Callable[[Any, Any], None],
                   stop: threading.Event) -> set[str]:
        """Emit the wanted rows found in the shard; the ids found (empty if the shard failed)."""
        expected = self.expected_md5(index)
        if expected is None:
            log.warning("no md5 for images_%03d.tar: its contents are used unchecked", index)
            self.report["unchecked"].append(index)
        last: ShardError | None = None
        members: list = []
        for attempt in range(self.retries + 1):
            if stop.is_set():
                return set()
            with tempfile.TemporaryFile(dir=self.run_dir, prefix=f".shard_{index:03d}.", suffix=".spool") as spool:
                try:
                    found, md5 = self._scan(index, wanted, spool)
                except ShardError as err:
                    last = err
                    log.warning("images_%03d.tar: %s (try %d of %d)", index, err, attempt + 1, self.retries + 1)
                    if not err.retry:
                        break
                    continue
                members = found
                if expected is not None and md5 != expected:
                    last = ShardError("md5_mismatch", f"images_{index:03d}.tar md5 {md5} != {expected}")
                    log.warning("%s (try %d of %d)", last, attempt + 1, self.retries + 1)
                    continue
                ids = {row.id for row, *_ in found}
                with open(self.run_dir / JOURNAL, "a", encoding="utf-8") as journal:
                    journal.write(json.dumps({"shard": index, "md5": md5, "ids": sorted(ids)}) + "\n")
                for row, offset, length, error in found:
                    if error is not None:
                        emit(row, error)
                    else:
                        spool.seek(offset)
                        emit(row, spool.read(length))
                self.report["read"].append(index)
                return ids
        assert last is not None
        self.report["failed"][f"{index:03d}"] = f"{last.reason}: {last.detail}"[:300]
        if last.reason == "md5_mismatch":  # we know which sampled rows it held: they fail with it
            for row, *_ in members:
                emit(row, FetchError("md5_mismatch", last.detail, transient=True))
            return {row.id for row, *_ in members}
        return set()

    # -- all of them --------------------------------------------------------------------------
    def verified(self) -> dict[int, set[str]]:
        out: dict[int, set[str]] = {}
        path = self.run_dir / JOURNAL
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    out[int(rec["shard"])] = set(rec["ids"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line
        return out

    def results(self, rows: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        rows = list(rows)

        def produce(emit: Callable[[Any, Any], None], stop: threading.Event) -> None:
            wanted = {row.id: row for row in rows}
            if not wanted:
                return
            verified = self.verified()
            attributed = set().union(*verified.values()) if verified else set()
            needed = [s for s in self.shards if s in verified and verified[s] & wanted.keys()]
            if wanted.keys() - attributed:
                needed += [s for s in self.shards if s not in verified]
            self.report["skipped"] = [s for s in self.shards if s not in needed]
            lock = threading.Lock()
            remaining = dict(wanted)

            def one(index: int) -> None:
                with lock:
                    if not remaining or stop.is_set():
                        return
                    look_for = dict(remaining)
                got = self.read_shard(index, look_for, emit, stop)
                with lock:
                    for image_id in got:
                        remaining.pop(image_id, None)

            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                for fut in [pool.submit(one, s) for s in needed]:
                    fut.result()
            failed = ", ".join(self.report["failed"]) or "none"
            for row in remaining.values():
                emit(row, ImageError("missing", f"not in shards read (failed shards: {failed})"))

        return threaded_results(produce)
