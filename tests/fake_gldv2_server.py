"""A real aiohttp server on 127.0.0.1 (random port) in a background thread, for the http/tar tests.

Routes:
    /img/<name>     image bodies with injected faults (see FakeServer.plan)
    /files/<path>   files from a folder (tar shards, md5 lists, train.csv), Range-aware via aiohttp
Every request is counted per path (`hits`), and the User-Agent of each is kept.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from aiohttp import web


class FakeServer:
    def __init__(self, root: Path | None = None, latency: float = 0.0):
        self.root = root  # folder for /files/
        self.latency = latency  # seconds added to every response (a CDN's round trip)
        self.bodies: dict[str, bytes] = {}  # /img/<name> -> body
        # /img/<name> -> (fault, how many requests get it before the body is served normally)
        self.plan: dict[str, tuple[str, float]] = {}
        # /files/<name> -> (bytes served instead of the file, how many requests get them)
        self.file_faults: dict[str, tuple[bytes, float]] = {}
        self.hits: Counter = Counter()
        self.agents: set[str] = set()
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base}/img/{name}"

    def _count(self, request: web.Request) -> int:
        with self._lock:
            self.hits[request.path] += 1
            self.agents.add(request.headers.get("User-Agent", ""))
            return self.hits[request.path]

    async def _img(self, request: web.Request) -> web.StreamResponse:
        n = self._count(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        if request.headers.get("User-Agent", "").startswith(("Python", "aiohttp")) or not request.headers.get("User-Agent"):
            return web.Response(status=403, text="anonymous clients are not welcome")  # like Wikimedia
        name = request.match_info["name"]
        fault, times = self.plan.get(name, ("ok", 0))
        body = self.bodies.get(name, b"")
        if n > times:
            fault = "ok"
        if fault == "ok":
            if name not in self.bodies:
                return web.Response(status=404)
            return web.Response(body=body, content_type="image/jpeg")
        if fault.startswith("status_"):
            code = int(fault.split("_")[1])
            headers = {"Retry-After": "1"} if code == 429 else {}
            return web.Response(status=code, headers=headers, text="error")
        if fault == "slow":
            await asyncio.sleep(3.0)
            return web.Response(body=body, content_type="image/jpeg")
        if fault == "reset":
            request.transport.abort()  # RST/close before any byte of the response
            raise asyncio.CancelledError()
        if fault == "truncated":
            resp = web.StreamResponse(headers={"Content-Length": str(len(body)), "Content-Type": "image/jpeg"})
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            await asyncio.sleep(0.05)
            request.transport.abort()
            raise asyncio.CancelledError()
        if fault == "html":
            return web.Response(body=b"<html><body>Not here</body></html>", content_type="image/jpeg")
        if fault == "chunked":  # no Content-Length: the cap must hold while reading
            resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for i in range(0, len(body), 65536):
                await resp.write(body[i : i + 65536])
            await resp.write_eof()
            return resp
        if fault.startswith("redirect:"):
            raise web.HTTPFound(location=fault.split(":", 1)[1])
        raise AssertionError(f"unknown fault {fault}")

    async def _files(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        rel = request.match_info["path"]
        assert self.root is not None
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            return web.Response(status=404)
        fault = self.file_faults.get(rel)
        if fault is not None and self.hits[request.path] <= fault[1]:
            return web.Response(body=fault[0], content_type="application/x-tar")
        return web.FileResponse(path)

    def start(self) -> "FakeServer":
        self.thread.start()
        app = web.Application()
        app.router.add_get("/img/{name}", self._img)
        app.router.add_get("/files/{path:.+}", self._files)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)

        async def setup() -> int:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self.port = asyncio.run_coroutine_threadsafe(setup(), self.loop).result(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            await self.runner.cleanup()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)

    def reset_hits(self) -> None:
        with self._lock:
            self.hits.clear()

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(cond: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False
