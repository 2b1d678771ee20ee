"""The HTTP side of `landmark-ae serve`.

    POST /query?k=N   the image's bytes as the body (or one multipart file) -> {"neighbours": [...]}
    GET  /healthz     200 {"status": "ok"} (503 {"status": "stopping"} while draining after SIGTERM)
    GET  /info        model, dim, database size, checkpoint sha256, index
    GET  /            the search page, and the routes it reads (serve/page.py)

Bad input never takes the server down and is never a 500: a body that is not a usable image, a bad k, a
malformed multipart body or one that does not decode as its Content-Encoding says is 400, as is an image
over max_pixels (read from its header, before decoding); a body over max_body_mb 413 (refused from its
Content-Length, or cut off while reading, multipart included). A request that would take the bytes all
requests hold past max_inflight_mb, more waiting queries than max_queue, or a request not answered
within timeout_s (reading, decoding and searching together) is 503 with Retry-After. Nothing from a
request is used as a path.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np
from aiohttp import web
from PIL import Image

from landmark_ae.data.images import ImageError
from landmark_ae.retrieval.embed_run import EMBED_SETTINGS
from landmark_ae.serve.batcher import MicroBatcher, QueueFull
from landmark_ae.serve.body import Busy, BytesInFlight, Held, read_image_bytes

log = logging.getLogger("landmark_ae.serve")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RETRY_AFTER = {"Retry-After": "1"}  # seconds: every 503 says when to try again
MAX_COUNT_DIGITS = 9


@dataclass
class ServeState:
    budget: BytesInFlight
    inflight: int = 0  # requests being handled (the drain on SIGTERM waits for none)
    stopping: bool = False  # set on SIGTERM: answers close their connection


RETRIEVER = web.AppKey("retriever", object)  # a Retriever (typed loosely: this module does not import torch)
BATCHER = web.AppKey("batcher", MicroBatcher)
SETTINGS = web.AppKey("settings", dict)
DECODERS = web.AppKey("decoders", ThreadPoolExecutor)
STATE = web.AppKey("state", ServeState)
PAGE = web.AppKey("page", object)  # serve/page.py's PageData: what the search page reads of the run
STATIC = web.AppKey("static", dict)  # the page's files, read from the package at start


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def error(status: int, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request on stderr (and serve.log): method, path, status, milliseconds; counted in
    flight while handled."""
    tick = time.perf_counter()
    state = request.app[STATE]
    state.inflight += 1
    response = None
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # aiohttp's own (404, 405, 413 while reading) and ours (400): as JSON
        response = error(exc.status, exc.reason, RETRY_AFTER if exc.status == 503 else None)
    finally:
        state.inflight -= 1
        status = 500 if response is None else response.status  # None: a bug, which aiohttp answers 500
        log.info("%s %s %d %.1fms", request.method, request.path, status, (time.perf_counter() - tick) * 1000)
    if state.stopping or request.content.exception() is not None:
        response.force_close()  # stopping, or a body that cannot be read to its end: no more on this connection
    return response


def parse_count(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    """Query parameter `key` as a whole number from low to high (default when absent); else a 400."""
    raw = request.query.get(key)
    if raw is None:
        return default
    # isascii: "²" is a digit to str.isdigit() but not to int(); the length bounds int()'s work
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_COUNT_DIGITS and low <= int(raw) <= high):
        raise web.HTTPBadRequest(reason=f"{key} must be a whole number from {low} to {high}, not {raw[:20]!r}")
    return int(raw)


def parse_k(request: web.Request, default: int, most: int) -> int:
    return parse_count(request, "k", default, 1, most)


def decode(retriever: Any, data: bytes, max_pixels: int) -> np.ndarray:
    """The query image as the model takes it; an image over max_pixels is refused from its header, before
    its pixels are decoded (Image.open reads only the header)."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Image.DecompressionBombError:
        raise ImageError("too_large", f"over {max_pixels} pixels (max_pixels)") from None
    except (OSError, SyntaxError, ValueError):
        width = height = 0  # not an image: load_image says why
    if width * height > max_pixels:
        raise ImageError("too_large", f"{width}x{height} pixels; this server takes at most max_pixels={max_pixels}")
    return retriever.load_image(data)


async def decode_in_pool(app: web.Application, data: bytes, held: Held) -> np.ndarray:
    """decode() in the bounded decoder pool. Cancelled (the request's deadline): a decode still waiting
    is dropped; one already running finishes in its thread, and the request's bytes stay counted until then."""
    job = app[DECODERS].submit(decode, app[RETRIEVER], data, app[SETTINGS]["max_pixels"])
    held.pin(job)
    return await asyncio.wrap_future(job)


async def answer(request: web.Request, k: int, held: Held) -> web.Response:
    app = request.app
    data = await read_image_bytes(request, app[SETTINGS]["max_body"], held)
    if not data:
        return error(400, "empty body: send the image's bytes (e.g. curl --data-binary @photo.jpg)")
    try:
        image = await decode_in_pool(app, data, held)
    except ImageError as exc:
        return error(400, f"not a usable image: {exc.reason}" + (f" ({exc.detail[:120]})" if exc.detail else ""))
    del data
    hits = await app[BATCHER].submit(image, k)
    return web.json_response({"neighbours": app[PAGE].annotate(hits) if PAGE in app else hits})


async def query(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    k = parse_k(request, settings["k"], settings["max_k"])
    held = Held(request.app[STATE].budget)
    try:
        # one deadline for reading, decoding and searching together
        return await asyncio.wait_for(answer(request, k, held), settings["timeout_s"])
    except Busy:
        return error(503, f"too many bytes in flight (max_inflight_mb={settings['max_inflight'] / 2**20:g}): "
                     "retry shortly", RETRY_AFTER)
    except QueueFull:
        return error(503, "too many queries waiting: retry shortly", RETRY_AFTER)
    except asyncio.TimeoutError:
        return error(503, f"no answer within {settings['timeout_s']} s: retry shortly", RETRY_AFTER)
    finally:
        held.release()


async def healthz(request: web.Request) -> web.Response:
    if request.app[STATE].stopping:  # draining after SIGTERM: a load balancer should send no more
        return web.json_response({"status": "stopping"}, status=503, headers=RETRY_AFTER)
    return web.json_response({"status": "ok"})


def local_client(request: web.Request) -> bool:
    """A client on this machine talking to the server directly: loopback peer, no proxy's forwarding header."""
    forwarded = any(name in request.headers for name in ("Forwarded", "X-Forwarded-For", "X-Real-IP"))
    return not forwarded and request.remote is not None and is_loopback(request.remote)


async def info(request: web.Request) -> web.Response:
    retriever = request.app[RETRIEVER]
    meta = retriever.run.meta
    run_dir = Path(retriever.run.run_dir)
    return web.json_response({
        "model": meta["model"], "dim": int(retriever.database.shape[1]), "database_size": retriever.size,
        "checkpoint_sha256": retriever.checkpoint_sha256, "index": retriever.index_name,
        # absolute paths only to a local client: a remote one learns the run's name, not the machine's layout
        "embed_run": str(run_dir) if local_client(request) else run_dir.name,
        "postprocess": {key: meta.get(key) for key in EMBED_SETTINGS},
        "batches": request.app[BATCHER].batches,
        "runtime": getattr(retriever, "runtime", "torch"),  # onnx: encoder.onnx on ONNX Runtime
    })


def make_app(retriever: Any, settings: dict[str, Any], token: str | None = None) -> web.Application:
    """settings: k, max_k, max_batch, max_wait_ms, max_queue, max_body, max_inflight (bytes), max_pixels,
    timeout_s."""
    from landmark_ae.serve import page  # the page's routes read this module's keys

    middlewares = [log_requests, *([page.require_token(token)] if token else [])]
    app = web.Application(middlewares=middlewares, client_max_size=settings["max_body"])
    app[RETRIEVER] = retriever
    app[SETTINGS] = settings
    app[STATE] = ServeState(BytesInFlight(settings["max_inflight"]))
    app[DECODERS] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")
    inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")  # one model, one thread
    app[BATCHER] = MicroBatcher(retriever.neighbours, inference, settings["max_batch"],
                                settings["max_wait_ms"] / 1000, settings["max_queue"])

    async def lifecycle(app: web.Application) -> Any:
        app[BATCHER].start()
        yield
        await app[BATCHER].stop()
        inference.shutdown(wait=True)
        app[DECODERS].shutdown(wait=True, cancel_futures=True)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/query", query)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/info", info)
    page.add_page(app, retriever)
    return app
