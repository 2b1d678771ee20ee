"""source=http: a concurrent aiohttp downloader for GLDv2 train.csv URLs (and the CSV itself).

`http_results(rows, settings)` yields `(row, bytes | ImageError)` for every row, in completion
order; prepare's `process_rows` decodes, resizes and stores them (in its DecodePool's threads, so decoding
never stalls the event loop, which runs in a thread of its own).

Network faults map to stable failure reasons:
    bad_url        not http(s), no host, or a redirect to a non-http(s) URL / too many redirects
    http_404/410   gone (never retried)
    http_<code>    any other error status (429 and 5xx only after `retries` retries)
    timeout        connect or read timeout (after retries)
    connection     refused / reset / disconnected (after retries)
    truncated      the body ended before its Content-Length (after retries)
    dns            the host name does not resolve
    too_big        the body is over `max_bytes` (checked on Content-Length and while reading)
Retries wait base * 2**attempt (capped at backoff_max) times a random factor in [0.5, 1.5); a 429
or 503 with `Retry-After` waits what it asks, capped at backoff_max.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import queue
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urljoin, urlsplit

import aiohttp

from landmark_ae.config import HttpConfig
from landmark_ae.data.images import ImageError
from landmark_ae.errors import UserError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class FetchError(ImageError):
    """A failed download; `transient` ones were retried and may succeed on a rerun."""

    def __init__(self, reason: str, detail: str = "", transient: bool = False, retry_after: float | None = None):
        super().__init__(reason, detail)
        self.transient = transient
        self.retry_after = retry_after


def check_url(url: str) -> str:
    """The URL if it is http(s) with a host; else FetchError(bad_url)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise FetchError("bad_url", str(exc)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("bad_url", url[:200])
    return url


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff(settings: HttpConfig, attempt: int, retry_after: float | None = None) -> float:
    if retry_after is not None:
        return min(retry_after, settings.backoff_max)
    return min(settings.backoff_max, settings.backoff_base * 2 ** attempt) * random.uniform(0.5, 1.5)


def make_session(settings: HttpConfig) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=settings.concurrency, limit_per_host=settings.per_host, ttl_dns_cache=300)
    # sock_read: silence while reading; sock_connect: opening the socket (not the wait for a pool slot).
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers={"User-Agent": settings.user_agent},
                                 auto_decompress=True)


def _classify(exc: BaseException) -> FetchError:
    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or (
            isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, socket.gaierror)):
        return FetchError("dns", str(exc)[:200])
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return FetchError("timeout", type(exc).__name__, transient=True)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return FetchError("truncated", str(exc).splitlines()[0][:200] if str(exc) else "", transient=True)
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return FetchError("bad_url", str(exc)[:200])
    if isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError, OSError)):
        return FetchError("connection", f"{type(exc).__name__}: {exc}"[:200], transient=True)
    if isinstance(exc, aiohttp.ClientError):
        return FetchError("connection", f"{type(exc).__name__}: {exc}"[:200], transient=True)
    raise exc


async def _get_once(session: aiohttp.ClientSession, url: str, settings: HttpConfig) -> bytes:
    """One GET, following up to max_redirects redirects by hand (each target must be http(s))."""
    for _ in range(settings.max_redirects + 1):
        check_url(url)
        async with session.get(url, allow_redirects=False) as resp:
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                if not location:
                    raise FetchError(f"http_{resp.status}", "redirect without Location")
                url = urljoin(str(resp.url), location)
                continue
            if resp.status != 200:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                raise FetchError(f"http_{resp.status}", resp.reason or "", transient=resp.status in RETRY_STATUS,
                                 retry_after=retry_after)
            if resp.content_length is not None and resp.content_length > settings.max_bytes:
                raise FetchError("too_big", f"Content-Length {resp.content_length} > {settings.max_bytes}")
            chunks, total = [], 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                total += len(chunk)
                if total > settings.max_bytes:
                    raise FetchError("too_big", f"body over {settings.max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    raise FetchError("bad_url", f"more than {settings.max_redirects} redirects")


async def fetch(session: aiohttp.ClientSession, url: str, settings: HttpConfig) -> bytes:
    """The body at url, retried on transient faults; raises FetchError with the last reason."""
    attempt = 0
    while True:
        try:
            return await _get_once(session, url, settings)
        except Exception as exc:
            err = _classify(exc)
        if not err.transient or attempt >= settings.retries:
            raise err
        await asyncio.sleep(backoff(settings, attempt, err.retry_after))
        attempt += 1


def threaded_results(produce: Callable[[Callable[[Any, Any], None], threading.Event], None],
                     maxsize: int = 256) -> Iterator[tuple[Any, Any]]:
    """Run produce(emit, stop) in a thread; yield what it emits. An error in it is re-raised here.

    The queue is bounded, so a producer faster than the decoders waits (emit blocks).
    """
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()
    done = object()
    failure: list[BaseException] = []

    def emit(row: Any, result: Any) -> None:
        while not stop.is_set():
            try:
                q.put((row, result), timeout=0.2)
                return
            except queue.Full:
                continue

    def target() -> None:
        try:
            produce(emit, stop)
        except BaseException as exc:
            failure.append(exc)
        finally:
            while True:
                try:
                    q.put(done, timeout=0.2)
                    break
                except queue.Full:
                    if stop.is_set():
                        break

    thread = threading.Thread(target=target, name="landmark-ae-producer", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                break
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
    if failure:
        raise failure[0]


def http_results(rows: Iterable[Any], settings: HttpConfig) -> Iterator[tuple[Any, "bytes | FetchError"]]:
    """(row, body or FetchError) for each row with a `url`, fetched concurrently."""
    rows = list(rows)

    def produce(emit: Callable[[Any, Any], None], stop: threading.Event) -> None:
        asyncio.run(_download_all(rows, settings, emit, stop))

    return threaded_results(produce)


async def _download_all(rows: list, settings: HttpConfig, emit: Callable[[Any, Any], None],
                        stop: threading.Event) -> None:
    pending: asyncio.Queue = asyncio.Queue()
    for row in rows:
        pending.put_nowait(row)

    async def deliver(row: Any, result: Any) -> None:
        # emit blocks while the decoders are behind (a bounded queue): wait off the event loop.
        await asyncio.to_thread(emit, row, result)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                row = pending.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                result: Any = await fetch(session, check_url(str(row.url or "")), settings)
            except FetchError as err:
                result = err
            await deliver(row, result)

    async with make_session(settings) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(min(settings.concurrency, max(1, len(rows))))]
        await asyncio.gather(*workers)


# --- train.csv from a URL -----------------------------------------------------------------------


def is_url(value: str | None) -> bool:
    return bool(value) and urlsplit(str(value)).scheme in ("http", "https")


def download_file(url: str, dest: Path, settings: HttpConfig, progress: bool = True) -> Path:
    """Stream url to dest (resuming a `dest.part` left by an earlier try with an HTTP Range request)."""
    if dest.is_file():
        return dest
    try:
        check_url(url)
    except FetchError:
        raise UserError(f"{url} is not an http(s) URL") from None
    try:
        asyncio.run(_download_file(url, dest, settings, progress))
    except FetchError as err:
        raise UserError(f"could not download {url}: {err.reason} {err.detail}".strip()) from None
    return dest


async def _download_file(url: str, dest: Path, settings: HttpConfig, progress: bool) -> None:
    from landmark_ae.ui import progress_bar

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    meta = dest.with_name(dest.name + ".part.etag")
    attempt = 0
    async with make_session(settings) as session:
        with progress_bar(progress) as bar:
            task = bar.add_task(f"download {dest.name}", total=None, status="")
            while True:
                have = part.stat().st_size if part.is_file() else 0
                headers = {}
                if have:
                    headers["Range"] = f"bytes={have}-"
                    if meta.is_file() and meta.read_text().strip():
                        headers["If-Range"] = meta.read_text().strip()
                try:
                    async with session.get(url, headers=headers, max_redirects=settings.max_redirects) as resp:
                        if resp.status == 416:  # nothing left to send: the part file is whole
                            break
                        if resp.status not in (200, 206):
                            raise FetchError(f"http_{resp.status}", resp.reason or "",
                                             transient=resp.status in RETRY_STATUS,
                                             retry_after=parse_retry_after(resp.headers.get("Retry-After")))
                        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified") or ""
                        meta.write_text(validator)
                        mode = "ab" if resp.status == 206 else "wb"
                        if resp.status == 200:
                            have = 0
                        total = resp.content_length + have if resp.content_length is not None else None
                        bar.update(task, total=total, completed=have)
                        with open(part, mode) as f:
                            async for chunk in resp.content.iter_chunked(1 << 20):
                                f.write(chunk)
                                have += len(chunk)
                                bar.update(task, completed=have)
                            f.flush()
                            os.fsync(f.fileno())
                    break
                except Exception as exc:
                    err = _classify(exc)
                    if not err.transient or attempt >= settings.retries:
                        raise err from None
                    await asyncio.sleep(backoff(settings, attempt, err.retry_after))
                    attempt += 1
    os.replace(part, dest)
    meta.unlink(missing_ok=True)
