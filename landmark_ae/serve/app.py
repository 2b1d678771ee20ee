"""The HTTP side of `landmark-ae serve`.

    POST /query?k=N   the image's bytes as the body (or one multipart file) -> {"neighbours": [...]}
    GET  /healthz     200 {"status": "ok"}
    GET  /info        model, dim, database size, checkpoint sha256, index

Bad input never takes the server down: a body that is not a usable image or a bad k is 400, a body
over max_body_mb 413 (refused from its Content-Length, or cut off while reading), more waiting
queries than max_queue or a request over timeout_s 503. Nothing from a request is used as a path.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

from aiohttp import web

from landmark_ae.data.images import ImageError
from landmark_ae.retrieval.embed_run import EMBED_SETTINGS
from landmark_ae.retrieval.retriever import Retriever
from landmark_ae.serve.batcher import MicroBatcher, QueueFull

log = logging.getLogger("landmark_ae.serve")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RETRIEVER = web.AppKey("retriever", Retriever)
BATCHER = web.AppKey("batcher", MicroBatcher)
SETTINGS = web.AppKey("settings", dict)
DECODERS = web.AppKey("decoders", ThreadPoolExecutor)


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request on stderr (and serve.log): method, path, status, milliseconds."""
    tick = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # aiohttp's own (404, 405, 413 while reading): as JSON
        status = exc.status
        return error(exc.status, exc.reason)
    finally:
        log.info("%s %s %d %.1fms", request.method, request.path, status, (time.perf_counter() - tick) * 1000)


def require_token(token: str) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return error(401, "missing or wrong token: send `Authorization: Bearer <token>`")
        return await handler(request)

    return check


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, or the first file of a multipart body; over `limit` bytes is a 413."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        part = await reader.next()
        while part is not None and getattr(part, "filename", None) is None and part.name not in ("image", "file"):
            part = await reader.next()
        if part is None:
            raise web.HTTPBadRequest(reason="the multipart body holds no image part (name it image or file)")
        data = bytearray()
        while chunk := await part.read_chunk():
            data.extend(chunk)
            if len(data) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
        return bytes(data)
    return await request.read()  # bounded by the app's client_max_size (a 413 beyond it)


def parse_k(request: web.Request, default: int, most: int) -> int:
    raw = request.query.get("k")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise web.HTTPBadRequest(reason=f"k must be a whole number from 1 to {most}, not {raw[:20]!r}")
    return int(raw)


async def query(request: web.Request) -> web.Response:
    app = request.app
    settings, retriever = app[SETTINGS], app[RETRIEVER]
    k = parse_k(request, settings["k"], settings["max_k"])
    data = await read_body(request, settings["max_body"])
    if not data:
        return error(400, "empty body: send the image's bytes (e.g. curl --data-binary @photo.jpg)")
    loop = asyncio.get_running_loop()
    try:
        image = await loop.run_in_executor(app[DECODERS], retriever.load_image, data)
    except ImageError as exc:
        return error(400, f"not a usable image: {exc.reason}" + (f" ({exc.detail[:120]})" if exc.detail else ""))
    try:
        hits = await asyncio.wait_for(app[BATCHER].submit(image, k), settings["timeout_s"])
    except QueueFull:
        return error(503, "too many queries waiting: retry shortly")
    except asyncio.TimeoutError:
        return error(503, f"no answer within {settings['timeout_s']} s: retry shortly")
    return web.json_response({"neighbours": hits})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def info(request: web.Request) -> web.Response:
    retriever = request.app[RETRIEVER]
    meta = retriever.run.meta
    return web.json_response({
        "model": meta["model"], "dim": int(retriever.database.shape[1]), "database_size": retriever.size,
        "checkpoint_sha256": retriever.checkpoint_sha256, "index": retriever.index_name, "embed_run": str(retriever.run.run_dir),
        "postprocess": {key: meta.get(key) for key in EMBED_SETTINGS},
        "batches": request.app[BATCHER].batches,
    })


def make_app(retriever: Retriever, settings: dict[str, Any], token: str | None = None) -> web.Application:
    """settings: k, max_k, max_batch, max_wait_ms, max_queue, max_body (bytes), timeout_s."""
    middlewares = [log_requests, *([require_token(token)] if token else [])]
    app = web.Application(middlewares=middlewares, client_max_size=settings["max_body"])
    app[RETRIEVER] = retriever
    app[SETTINGS] = settings
    app[DECODERS] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")
    inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")  # one model, one thread
    app[BATCHER] = MicroBatcher(retriever.neighbours, inference, settings["max_batch"],
                                settings["max_wait_ms"] / 1000, settings["max_queue"])

    async def lifecycle(app: web.Application) -> Any:
        app[BATCHER].start()
        yield
        await app[BATCHER].stop()
        inference.shutdown(wait=True)
        app[DECODERS].shutdown(wait=True)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/query", query)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/info", info)
    return app
