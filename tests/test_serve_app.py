"""landmark_ae/serve/app.py and body.py: a real server on 127.0.0.1 in this process, over real HTTP (aiohttp's
client, raw sockets where a client would not send it), answering from a stand-in for the model (no torch):
client mistakes are 400 never 500, bodies are bounded while read (multipart too), the bytes in flight
and decode time are bounded, and /info shows paths only to local clients."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Awaitable, Callable
from unittest import mock

import aiohttp
import numpy as np
from aiohttp.test_utils import TestServer, make_mocked_request
from PIL import Image

from landmark_ae.data.images import resized_rgb
from landmark_ae.serve.app import BATCHER, STATE, info, make_app

SETTINGS = {"k": 2, "max_k": 5, "max_batch": 4, "max_wait_ms": 1.0, "max_queue": 8, "max_body": 64 * 1024,
            "max_inflight": 1 << 20, "max_pixels": 1_000_000, "timeout_s": 5.0}


class StandIn:
    """What the app needs of a Retriever; decodes for real, ranks three rows; `decode_s` slows decoding,
    `gate` (once set up) holds each search until released."""

    def __init__(self, run_dir: Path, decode_s: float = 0.0):
        self.run = SimpleNamespace(meta={"model": "m1"}, run_dir=run_dir)
        self.database, self.size, self.checkpoint_sha256, self.index_name = np.zeros((3, 4)), 3, "0" * 64, "exact"
        self.decode_s, self.decodes = decode_s, 0
        self.gate: threading.Event | None = None
        self.searching = threading.Event()

    def load_image(self, data: bytes) -> np.ndarray:
        self.decodes += 1
        time.sleep(self.decode_s)
        return np.asarray(resized_rgb(data, 8)[0])

    def neighbours(self, images: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        self.searching.set()
        if self.gate is not None:
            self.gate.wait(10)
        return [[{"rank": r + 1, "id": f"row{r}"} for r in range(min(k, 3))] for _ in images]


def png(width: int = 16, height: int = 16, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def serving(retriever: StandIn, body: Callable[..., Awaitable[Any]], **settings: Any) -> Any:
    """Run body(session, url, app) against make_app(retriever) listening on 127.0.0.1."""

    async def main() -> Any:
        app = make_app(retriever, {**SETTINGS, **settings})
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as session:
                return await body(session, str(server.make_url("")), app)
        finally:
            await server.close()

    return asyncio.run(main())


async def status_of(session: aiohttp.ClientSession, url: str, body: Any = None, **headers: str) -> tuple[int, dict]:
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, {**await response.json(), **dict(response.headers)}


async def raw_http(url: str, request: bytes) -> bytes:
    """Send bytes as they are (what aiohttp's client would not send) and read the whole answer."""
    host, port = url.split("//")[1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port.rstrip("/")))
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


def multipart(*parts: bytes, boundary: bytes = b"XyZ") -> bytes:
    return b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts) + b"--" + boundary + b"--\r\n"


def image_field(data: bytes, name: bytes = b"image", extra: bytes = b"") -> bytes:
    return b'Content-Disposition: form-data; name="' + name + b'"; filename="a.png"\r\n' + extra + b"\r\n" + data


def test_client_mistakes_are_400_never_500(tmp_path):
    image = png()
    form = "multipart/form-data; boundary=XyZ"
    nested = b'Content-Disposition: form-data; name="image"\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n' + \
        multipart(image_field(image), boundary=b"in")
    mistakes = {
        "k=%C2%B2": ("/query?k=%C2%B2", image, {}), "5,000-digit k": ("/query?k=" + "9" * 5000, image, {}),
        "gzip header, plain body": ("/query", image, {"Content-Encoding": "gzip"}),
        "no boundary": ("/query", multipart(image_field(image)), {"Content-Type": "multipart/form-data"}),
        "wrong boundary": ("/query", multipart(image_field(image)), {"Content-Type": "multipart/form-data; boundary=abc"}),
        "garbage multipart": ("/query", b"\x00garbage\xff" * 50, {"Content-Type": form}),
        "empty multipart": ("/query", b"", {"Content-Type": form}),
        "nested multipart/mixed": ("/query", multipart(nested), {"Content-Type": form}),
        "part header over 8 KB": ("/query", multipart(image_field(image, extra=b"X-Pad: " + b"p" * 9000 + b"\r\n")),
                                  {"Content-Type": form}),
        "truncated multipart": ("/query", multipart(image_field(image))[:-20], {"Content-Type": form}),
    }

    async def body(session: aiohttp.ClientSession, url: str, app: Any) -> dict:
        got = {name: await status_of(session, url + path, data, **headers) for name, (path, data, headers) in mistakes.items()}
        got["ok raw"] = await status_of(session, url + "/query", image)
        got["ok multipart"] = await status_of(session, url + "/query", multipart(b'Content-Disposition: form-data; name="x"'
                                                                                  b"\r\n\r\nhello", image_field(image)),
                                              **{"Content-Type": form})
        return got

    got = serving(StandIn(tmp_path), body)
    assert {name: status for name, (status, _) in got.items()} == {**{name: 400 for name in mistakes},
                                                                    "ok raw": 200, "ok multipart": 200}
    assert all(answer["error"] for name, (_, answer) in got.items() if name in mistakes)
    assert "k must be a whole number from 1 to 5" in got["5,000-digit k"][1]["error"]
    assert "Content-Encoding: gzip" in got["gzip header, plain body"][1]["error"]
    assert "nested multipart" in got["nested multipart/mixed"][1]["error"]
    assert "8192 bytes" in got["part header over 8 KB"][1]["error"]


def test_multipart_bodies_count_against_max_body_while_read(tmp_path):
    """A chunked multipart body (no Content-Length) whose image follows a large other field: a 413 once
    the bytes read pass max_body, however the parts are laid out."""
    big_field = b'Content-Disposition: form-data; name="notes"\r\n\r\n' + b"n" * (300 * 1024)
    data = multipart(big_field, image_field(png()))

    async def chunks():
        for start in range(0, len(data), 16 * 1024):
            yield data[start : start + 16 * 1024]

    async def body(session: aiohttp.ClientSession, url: str, app: Any) -> tuple:
        return await status_of(session, url + "/query", chunks(), **{"Content-Type": "multipart/form-data; boundary=XyZ"})

    status, answer = serving(StandIn(tmp_path), body)
    assert status == 413, answer


def test_bytes_in_flight_are_bounded_and_released(tmp_path):
    """A body being read holds its Content-Length of max_inflight; one that does not fit is a 503 with
    Retry-After, unread; once the first is answered its bytes are free again."""
    image = png(64, 64, "L") + b"\0" * (40 * 1024 - len(png(64, 64, "L")))  # trailing bytes: PNG ignores them

    async def body(session: aiohttp.ClientSession, url: str, app: Any) -> tuple:
        host, port = url.split("//")[1].rstrip("/").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(image)
                     + image[:1000])
        await writer.drain()
        for _ in range(200):  # until the server has the first request's bytes counted
            if app[STATE].budget.used:
                break
            await asyncio.sleep(0.01)
        refused = await status_of(session, url + "/query", image)
        writer.write(image[1000:])
        first = await reader.read()
        writer.close()
        after = await status_of(session, url + "/query", image)
        return first, refused, after, app[STATE].budget.used

    first, refused, after, used = serving(StandIn(tmp_path), body, max_inflight=60 * 1024)
    assert first.startswith(b"HTTP/1.1 200"), first[:200]
    assert refused[0] == 503 and refused[1]["Retry-After"] == "1" and "max_inflight_mb" in refused[1]["error"]
    assert after[0] == 200 and used == 0


def test_decoding_is_inside_the_deadline_and_pixels_are_capped_from_the_header(tmp_path):
    """Slow decodes queued behind each other are answered 503 at timeout_s, not after the queue; the
    ones still waiting are never decoded. An image over max_pixels is refused before any decoding."""
    slow = StandIn(tmp_path, decode_s=0.6)

    async def body(session: aiohttp.ClientSession, url: str, app: Any) -> tuple:
        async def timed() -> tuple[int, float]:
            tick = time.perf_counter()
            status, _ = await status_of(session, url + "/query", png())
            return status, time.perf_counter() - tick

        answers = await asyncio.gather(*(timed() for _ in range(8)))
        while slow.decodes and app[STATE].budget.used:  # a decode past its deadline holds its bytes until done
            await asyncio.sleep(0.05)
        return answers, app[STATE].budget.used

    answers, used = serving(slow, body, timeout_s=0.3)
    assert [status for status, _ in answers] == [503] * 8
    assert max(seconds for _, seconds in answers) < 1.5  # before: up to 8 x 0.6 / 2 decoders = 2.4 s
    assert slow.decodes <= 4 and used == 0

    capped = StandIn(tmp_path)

    async def bomb(session: aiohttp.ClientSession, url: str, app: Any) -> tuple:
        return await status_of(session, url + "/query", png(2000, 1000, "1"))

    status, answer = serving(capped, bomb, max_pixels=1_000_000)
    assert status == 400 and "2000x1000 pixels" in answer["error"] and "max_pixels=1000000" in answer["error"]
    assert capped.decodes == 0


def test_more_waiting_queries_than_max_queue_are_503(tmp_path):
    standin = StandIn(tmp_path)
    standin.gate = threading.Event()

    async def body(session: aiohttp.ClientSession, url: str, app: Any) -> list:
        searched = asyncio.ensure_future(status_of(session, url + "/query", png()))
        while not standin.searching.is_set():
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(status_of(session, url + "/query", png()))
        while not app[BATCHER].queue.qsize():
            await asyncio.sleep(0.01)
        refused = await status_of(session, url + "/query", png())
        standin.gate.set()
        return [await searched, await waiting, refused]

    answers = serving(standin, body, max_batch=1, max_queue=1)
    assert [status for status, _ in answers] == [200, 200, 503]
    assert "too many queries waiting" in answers[2][1]["error"] and answers[2][1]["Retry-After"] == "1"


def test_info_shows_the_run_path_only_to_local_clients(tmp_path):
    run_dir = tmp_path / "outputs" / "embed" / "2026-01-01_00-00-00"

    async def body(session: aiohttp.ClientSession, url: str, app: Any) -> list:
        answers = []
        for headers in ({}, {"X-Forwarded-For": "203.0.113.7"}):
            async with session.get(url + "/info", headers=headers) as response:
                answers.append((await response.json())["embed_run"])
        remote = make_mocked_request("GET", "/info", app=app,
                                     transport=mock.Mock(get_extra_info=lambda name, default=None: ("203.0.113.7", 5000)))
        answers.append(json_of(await info(remote))["embed_run"])
        return answers

    assert serving(StandIn(run_dir), body) == [str(run_dir), run_dir.name, run_dir.name]


def json_of(response: Any) -> dict:
    import json

    return json.loads(response.body)


def test_while_draining_healthz_is_503_and_answers_close_their_connection(tmp_path):
    async def body(session: aiohttp.ClientSession, url: str, app: Any) -> list:
        app[STATE].stopping = True  # what the SIGTERM drain sets (server.drain)
        answers = []
        for method, path in (("GET", "/healthz"), ("POST", "/query")):
            async with session.request(method, url + path, data=png() if method == "POST" else None) as response:
                answers.append((response.status, response.headers.get("Connection"), await response.json()))
        return answers

    assert serving(StandIn(tmp_path), body) == [(503, "close", {"status": "stopping"}),
                                                 (200, "close", {"neighbours": [{"rank": 1, "id": "row0"},
                                                                                {"rank": 2, "id": "row1"}]})]
