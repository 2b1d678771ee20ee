"""`landmark-ae serve` (landmark_ae/serve/): a real server on 127.0.0.1 in a subprocess. It answers as
the CLI does, micro-batches concurrent queries, refuses bad input with 4xx JSON and stays up, answers
from memory (a file changed or truncated under it changes nothing), enforces its token without storing
it, and on SIGTERM answers what is in flight before it stops. The limits on bytes, decoding and client
mistakes are tested in-process in test_serve_app.py; the refusals at start here, in-process too."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import aiohttp
import numpy as np
import pytest
from conftest import REPO, compose, one_line_error, run_cli
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


def answer_ids(url: str, jpeg: bytes) -> list[tuple[str, float]]:
    [(status, body)] = fetch(url, post("/query?k=4", jpeg))
    assert status == 200, body
    return [(hit["id"], round(hit["distance"], 5)) for hit in body["neighbours"]]


def change_on_disk_changes_nothing(run: Path, url: str, jpeg: bytes) -> None:
    """embeddings.npy rewritten in place (its rows reversed), then truncated: the server answers as before
    (memory-mapped, it answered with other rows, then died of SIGBUS)."""
    before = answer_ids(url, jpeg)
    path = run / "embeddings.npy"
    rows = np.load(path)
    with open(path, "r+b") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        offset = f.tell()
        f.write(np.ascontiguousarray(rows[::-1]).tobytes())
    assert answer_ids(url, jpeg) == before
    os.truncate(path, offset + 16)
    assert answer_ids(url, jpeg) == before
    assert fetch(url, get("/healthz")) == [(200, {"status": "ok"})]


def requests_across_sigterm(proc: subprocess.Popen, url: str, jpeg: bytes, n: int = 6) -> list[bytes]:
    """n connections open before SIGTERM: half with a request partly sent, half whose request comes just
    after the signal. Every one is answered before the server exits (before: the second half were cut off)."""
    host, port = url.split("//")[1].rsplit(":", 1)
    head = b"POST /query?k=4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
    conns = [socket.create_connection((host, int(port)), timeout=20) for _ in range(n)]
    for conn in conns[: n // 2]:
        conn.sendall(head + jpeg[:100])
    time.sleep(0.5)  # the server has accepted them all, and is reading the first half's bodies
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)  # the signal handled: these come during the drain
    for conn in conns[: n // 2]:
        conn.sendall(jpeg[100:])
    for conn in conns[n // 2 :]:
        conn.sendall(head + jpeg)
    answers = []
    for conn in conns:
        with conn:
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
            answers.append(b"".join(chunks))
    return answers


def check_answers_like_the_cli(url: str, images: list[Path], expected: list) -> None:
    answers = fetch(url, *(post("/query?k=4", p.read_bytes()) for p in images))
    assert [status for status, _ in answers] == [200] * 6
    for (_, body), want in zip(answers, expected, strict=True):
        got = body["neighbours"]
        assert [h["id"] for h in got] == [h["id"] for h in want] and [h["rank"] for h in got] == [1, 2, 3, 4]
        assert [h["distance"] for h in got] == pytest.approx([h["distance"] for h in want], rel=1e-4)
    [(_, info)] = fetch(url, get("/info"))
    assert info["model"] == "m1" and info["dim"] == 392 and info["index"] == "exact"
    assert 1 <= info["batches"] < 6  # six concurrent queries shared forward passes


def check_bad_input(url: str, jpeg: bytes, expected_first: list) -> None:
    big = jpeg * 40
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
    assert status == 200 and [h["id"] for h in body["neighbours"]] == [h["id"] for h in expected_first]


def test_serve_answers_as_the_cli_does_from_memory_and_drains_on_sigterm(tiny_embedded, tiny_prepared, tmp_path):
    images = sorted((tiny_prepared / "test").glob("*.jpg"))[:6]
    cli = run_cli("query", f"image=[{','.join(map(str, images))}]", f"embed_run={tiny_embedded}", "k=4",
                  "format=json", outputs=tmp_path / "cli")
    assert cli.returncode == 0, cli.stderr
    expected = [answer["neighbours"] for answer in json.loads(cli.stdout)]
    embed_run = shutil.copytree(tiny_embedded, tmp_path / "embed_run")  # its files are changed below
    jpeg = images[0].read_bytes()
    with server(embed_run, tmp_path / "outputs", "max_wait_ms=300", "max_body_mb=0.02") as (proc, url):
        assert url.startswith("http://127.0.0.1:")
        check_answers_like_the_cli(url, images, expected)
        check_bad_input(url, jpeg, expected[0])
        change_on_disk_changes_nothing(embed_run, url, jpeg)
        answers = requests_across_sigterm(proc, url, jpeg)
        assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 6
        proc.wait(timeout=20)
        assert proc.returncode == 0
        log = proc.stderr.read()
    assert "POST /query 200" in log and "POST /query 413" in log and "Traceback" not in log
    run = next((tmp_path / "outputs" / "serve").iterdir())
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


def test_token_is_enforced_never_stored_and_host_rules(tiny_embedded, tiny_prepared, tmp_path):
    jpeg = next((tiny_prepared / "test").glob("*.jpg"))
    with server(tiny_embedded, tmp_path / "a", "token=s3cret") as (_, url):
        auth = {"Authorization": "Bearer s3cret"}
        statuses = fetch(url, get("/healthz"), get("/healthz", Authorization="Bearer wrong"), get("/healthz", **auth),
                         post("/query", jpeg.read_bytes(), **auth))
        assert [s for s, _ in statuses] == [401, 401, 200, 200]
    run = next((tmp_path / "a" / "serve").iterdir())
    stored = [p for p in run.rglob("*") if p.is_file() and b"s3cret" in p.read_bytes()]
    assert stored == [] and (run / ".hydra" / "overrides.yaml").is_file()
    shown = run_cli("serve", "token=s3cret", "--cfg", "job", outputs=tmp_path / "c")
    assert shown.returncode == 0 and "s3cret" not in shown.stdout + shown.stderr and "token: null" in shown.stdout
    one_line_error(run_cli("serve", f"embed_run={tiny_embedded}", "host=0.0.0.0", outputs=tmp_path / "b"),
                   "host=0.0.0.0 lets other machines in: set token=<secret>")
    assert not (tmp_path / "b" / "serve").exists()


def test_serve_refuses_at_start_what_could_never_answer(tiny_embedded, tmp_path, monkeypatch):
    """max_queue=0, a default k above max_k, max_inflight_mb below max_body_mb, device=meta, and an embed
    run changed since embed wrote it: each one line before the server binds. The token leaves argv."""
    from landmark_ae.commands.serve import check_settings, token_out_of_argv
    from landmark_ae.config import ServeConfig, validate
    from landmark_ae.errors import UserError
    from landmark_ae.serve.loading import load_served_run
    from landmark_ae.serve.server import check_device

    with pytest.raises(UserError, match="max_queue"):
        validate(compose("serve", "max_queue=0"), ServeConfig)
    with pytest.raises(UserError, match="k=20 .* above max_k=10"):
        check_settings(compose("serve", "k=20", "max_k=10"))
    with pytest.raises(UserError, match="max_inflight_mb=1 is below max_body_mb=2"):
        check_settings(compose("serve", "max_inflight_mb=1", "max_body_mb=2"))
    with pytest.raises(UserError, match="device=meta cannot run the model"):
        check_device("meta")
    served = load_served_run(str(tiny_embedded), str(tmp_path))
    assert not isinstance(served.embeddings, np.memmap) and not isinstance(served.database_rows(), np.memmap)
    changed = shutil.copytree(tiny_embedded, tmp_path / "changed")
    with open(changed / "embeddings.npy", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\1\2\3\4")
    with pytest.raises(UserError, match="was changed after its run wrote it"):
        load_served_run(str(changed), str(tmp_path))
    monkeypatch.delenv("LANDMARK_AE_TOKEN", raising=False)
    assert token_out_of_argv(["k=3", "token=abc", "+token=s3cret", "tokens=x"]) == ["k=3", "tokens=x"]
    assert os.environ["LANDMARK_AE_TOKEN"] == "s3cret"
