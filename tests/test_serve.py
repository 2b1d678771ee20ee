"""`landmark-ae serve` (landmark_ae/serve/): a real server on 127.0.0.1 in a subprocess. It answers as
the CLI does, micro-batches concurrent queries, refuses bad input with 4xx/5xx JSON and stays up,
enforces its token, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest
from conftest import REPO, one_line_error, run_cli
from PIL import Image


@contextmanager
def server(embed_run: Path, outputs: Path, *args: str, env: dict | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """`landmark-ae serve embed_run=... port=0 <args>`; yields the process and the url it printed."""
    full_env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "landmark_ae", "serve", f"embed_run={embed_run}", "port=0", *args],
                            cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the server listens (or the process ends)
        assert line.startswith("url\t"), (line, proc.stderr.read() if proc.poll() is not None else "")
        yield proc, line.split("\t", 1)[1].strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def fetch(url: str, *requests: tuple[str, str, bytes | None, dict]) -> list[tuple[int, dict]]:
    """Send (method, path, body, headers) requests concurrently; returns (status, json) for each."""

    async def one(session: aiohttp.ClientSession, method: str, path: str, body: bytes | None, headers: dict):
        async with session.request(method, url + path, data=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def all_of() -> list:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(one(session, *r) for r in requests))

    return asyncio.run(all_of())


def post(path: str, body: bytes | None, **headers: str) -> tuple[str, str, bytes | None, dict]:
    return ("POST", path, body, headers)


def get(path: str, **headers: str) -> tuple[str, str, None, dict]:
    return ("GET", path, None, headers)


def png_bomb() -> bytes:
    """A tiny file that decodes to 100 megapixels."""
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, format="PNG")
    return buf.getvalue()


def test_serve_answers_as_the_cli_does_batches_and_survives_bad_input(tiny_embedded, tiny_prepared, tmp_path):
    images = sorted((tiny_prepared / "test").glob("*.jpg"))[:6]
    cli = run_cli("query", f"image=[{','.join(map(str, images))}]", f"embed_run={tiny_embedded}", "k=4",
                  "format=json", outputs=tmp_path / "cli")
    assert cli.returncode == 0, cli.stderr
    expected = [answer["neighbours"] for answer in json.loads(cli.stdout)]
    big = images[0].read_bytes() * 40
    with server(tiny_embedded, tmp_path / "outputs", "max_wait_ms=300", "max_body_mb=0.02") as (proc, url):
        assert url.startswith("http://127.0.0.1:")
        answers = fetch(url, *(post("/query?k=4", p.read_bytes()) for p in images))
        assert [status for status, _ in answers] == [200] * 6
        for (_, body), want in zip(answers, expected, strict=True):
            got = body["neighbours"]
            assert [h["id"] for h in got] == [h["id"] for h in want] and [h["rank"] for h in got] == [1, 2, 3, 4]
            assert [h["distance"] for h in got] == pytest.approx([h["distance"] for h in want], rel=1e-4)
        [(_, info)] = fetch(url, get("/info"))
        assert info["model"] == "m1" and info["dim"] == 392 and info["index"] == "exact"
        assert 1 <= info["batches"] < 6  # six concurrent queries shared forward passes
        jpeg = images[0].read_bytes()
        bad = fetch(url, post("/query", b"<html>not found</html>"), post("/query", jpeg[: len(jpeg) // 3]),
                    post("/query", png_bomb()), post("/query?k=0", jpeg), post("/query?k=abc", jpeg),
                    post("/query?k=5000", jpeg), post("/query", b""), post("/query", big), get("/nope"))
        assert [status for status, _ in bad] == [400, 400, 400, 400, 400, 400, 400, 413, 404]
        assert all(isinstance(body["error"], str) and body["error"] for _, body in bad)
        assert "too_large" in bad[2][1]["error"]
        assert fetch(url, get("/healthz")) == [(200, {"status": "ok"})]
        # multipart, as browsers and `curl -F image=@photo.jpg` send it
        form = aiohttp.FormData()
        form.add_field("image", jpeg, filename="photo.jpg", content_type="image/jpeg")
        [(status, body)] = fetch(url, ("POST", "/query?k=4", form, {}))
        assert status == 200 and [h["id"] for h in body["neighbours"]] == [h["id"] for h in expected[0]]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert proc.returncode == 0
        log = proc.stderr.read()
    assert "POST /query 200" in log and "POST /query 413" in log and "Traceback" not in log
    run = next((tmp_path / "outputs" / "serve").iterdir())
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


def test_token_queue_limit_and_host_rules(tiny_embedded, tiny_prepared, tmp_path):
    jpeg = next((tiny_prepared / "test").glob("*.jpg"))
    with server(tiny_embedded, tmp_path / "a", "max_queue=0", env={"LANDMARK_AE_TOKEN": "s3cret"}) as (_, url):
        auth = {"Authorization": "Bearer s3cret"}
        statuses = fetch(url, get("/healthz"), get("/healthz", Authorization="Bearer wrong"), get("/healthz", **auth),
                         post("/query", jpeg.read_bytes(), **auth))
        assert [s for s, _ in statuses] == [401, 401, 200, 503]
        assert "too many queries waiting" in statuses[3][1]["error"]
    one_line_error(run_cli("serve", f"embed_run={tiny_embedded}", "host=0.0.0.0", outputs=tmp_path / "b"),
                   "host=0.0.0.0 lets other machines in: set token=<secret>")
    assert not (tmp_path / "b" / "serve").exists()
