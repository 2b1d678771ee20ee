"""source=http (landmark_ae/data/sources/http.py) against a real aiohttp server on 127.0.0.1 that injects
every fault we know of; a killed download resumes without half-written images."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, hexid, jpeg, outcome, results, run_cli, run_in_process
from fake_gldv2_server import FakeServer, wait_for
from PIL import Image

from landmark_ae.errors import UserError

RETRIES = 2
RECOVER = ("slow", "reset", "truncated")  # the network heals between the two runs
HTTP = [f"data.http.retries={RETRIES}", "data.http.backoff_base=0.01", "data.http.backoff_max=1.5",
        "data.http.read_timeout=0.4", "data.http.connect_timeout=1", "data.http.max_bytes=150000",
        "data.http.concurrency=8", "data.http.per_host=4"]


@pytest.fixture(scope="module")
def bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, format="PNG")  # 81 MP in a few kB
    return buf.getvalue()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# name -> (fault, times, expected after run 1, expected after run 2); None = downloaded
FAULTS = {
    "ok": ("ok", 0, None, None),
    "gone404": ("status_404", 1e9, "http_404", "http_404"),
    "gone410": ("status_410", 1e9, "http_410", "http_410"),
    "flaky500": ("status_500", 1, None, None),
    "limited429": ("status_429", 1, None, None),
    "always503": ("status_503", 1e9, "http_503", "http_503"),
    "slow": ("slow", 1e9, "timeout", None),  # these three recover between the runs
    "reset": ("reset", 1e9, "connection", None),
    "truncated": ("truncated", 1e9, "truncated", None),
    "html": ("html", 1e9, "not_an_image", "not_an_image"),
    "bomb": ("ok", 0, "too_large", "too_large"),
    "oversized": ("ok", 0, "too_big", "too_big"),
    "oversized_chunked": ("chunked", 1e9, "too_big", "too_big"),
    "to_file": ("redirect:file:///etc/passwd", 1e9, "bad_url", "bad_url"),
    "to_ok": ("redirect:/img/ok", 1e9, None, None),
    "forbidden": ("status_403", 1e9, "http_403", "http_403"),
}


@pytest.fixture
def server(bomb):
    with FakeServer() as srv:
        yield srv


Expected = dict[str, str | None]


def build(server: FakeServer, tmp_path: Path, bomb: bytes) -> tuple[Path, Expected, Expected, dict[str, str]]:
    """train.csv of good rows plus one row per fault; expected reason per id (run 1, run 2)."""
    rows, first, second, paths = [], {}, {}, {}
    for i in range(24):  # plain good rows, two landmarks each split
        name = f"good{i}"
        server.bodies[name] = jpeg(i)
        rows.append((hexid(i), server.url(name), 1000 + i % 3))
        first[hexid(i)] = second[hexid(i)] = None
        paths[hexid(i)] = f"/img/{name}"
    for j, (name, (fault, times, r1, r2)) in enumerate(FAULTS.items()):
        image_id = hexid(100 + j)
        server.bodies[name] = {"bomb": bomb, "oversized": jpeg(j) + os.urandom(200_000),
                               "oversized_chunked": jpeg(j) + os.urandom(200_000)}.get(name, jpeg(100 + j))
        server.plan[name] = (fault, times)
        rows.append((image_id, server.url(name), 1000 + j % 3))
        first[image_id], second[image_id] = r1, r2
        paths[image_id] = f"/img/{name}"
    port = closed_port()
    extra = [
        (hexid(200), f"http://127.0.0.1:{port}/refused.jpg", 1001, "connection"),
        (hexid(201), "ftp://127.0.0.1/x.jpg", 1001, "bad_url"),
        (hexid(202), "file:///etc/passwd", 1002, "bad_url"),
        (hexid(203), "", 1002, "bad_url"),
    ]
    for image_id, url, lid, reason in extra:
        rows.append((image_id, url, lid))
        first[image_id] = second[image_id] = reason
    # rejected before anything is fetched or any path is built
    rows.append(("../../x", server.url("good0"), 1000))
    rows.append(("../../../../tmp/evil", server.url("good1"), 1000))
    rows.append((hexid(0), server.url("good5"), 1000))  # duplicate id
    csv = tmp_path / "train.csv"
    pd.DataFrame(rows, columns=["id", "url", "landmark_id"]).to_csv(csv, index=False)
    return csv, first, second, paths


def tree(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


def test_http_faults_end_downloaded_or_failed_and_rerun_only_refetches_transient(server, bomb, tmp_path):
    csv, first, second, paths = build(server, tmp_path, bomb)
    run_dir = tmp_path / "out" / "run"
    outside_before = tree(tmp_path) - {run_dir.parent}
    args = ["data=gldv2_http", f"data.csv={csv}", "progress=false", "workers=2", "data.landmark_min=1000",
            "data.landmark_max=1003", *HTTP]
    res = run_in_process("prepare", *args, run_dir=run_dir)
    got = outcome(run_dir)
    expected = {k: v for k, v in first.items()}
    rejected = {"../../x": "invalid_id", "../../../../tmp/evil": "invalid_id"}
    failures = pd.read_csv(run_dir / "failures.csv", dtype={"id": str}, keep_default_na=False)
    invalid = failures[failures.reason == "invalid_id"]
    assert dict(zip(invalid["id"], invalid["reason"], strict=True)) == rejected
    assert (failures.reason == "duplicate_id").sum() == 1
    got = {k: v for k, v in got.items() if k in expected}
    assert got == expected
    n_failed_run1 = sum(v is not None for v in expected.values()) + 3
    assert res["failed"] == n_failed_run1
    assert res["failed_timeout"] == 1 and res["failed_bad_url"] == 4 and res["failed_http_404"] == 1
    # the descriptive User-Agent went out on every request (the server 403s anonymous clients)
    assert server.agents and all(a.startswith("landmark-ae/") for a in server.agents)
    # retried: 500 once then 200; 429 once (Retry-After 1 s) then 200
    assert server.hits["/img/flaky500"] == 2 and server.hits["/img/limited429"] == 2
    assert server.hits["/img/slow"] == RETRIES + 1 and server.hits["/img/gone404"] == 1
    # nothing written outside the run dir (the traversal ids included)
    assert tree(tmp_path) - {run_dir.parent} - tree(run_dir.parent) == outside_before - tree(run_dir.parent)
    assert not list(tmp_path.rglob("evil*")) and not (tmp_path / "x").exists() and not Path("/tmp/evil").exists()
    # stored images are whole, 96x96, and match the arrays
    train = pd.read_csv(run_dir / "train.csv", dtype={"id": str})
    arr = np.load(run_dir / "train.npy")
    assert arr.shape[1:] == (96, 96, 3) and len(arr) == len(train)
    assert np.array_equal(np.asarray(Image.open(run_dir / train["path"][0]).convert("RGB")), arr[0])
    mtimes = {p: p.stat().st_mtime_ns for p in run_dir.glob("*/*.jpg")}

    # rerun: only the transient failures are fetched again; nothing that was good, no permanent failure
    server.reset_hits()
    for name in RECOVER:
        server.plan[name] = ("ok", 0)
    res2 = run_in_process("prepare", *args, f"resume={run_dir}", run_dir=run_dir)
    got2 = {k: v for k, v in outcome(run_dir).items() if k in second}
    assert got2 == second
    refetched = {p for p in server.hits}
    transient = {paths[i] for i, r in first.items() if r is not None and i in paths and r not in
                 ("http_404", "http_410", "not_an_image", "too_large", "bad_url")}
    assert refetched == transient, (refetched, transient)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert res2["failed"] == sum(v is not None for v in second.values()) + 3
    assert not list(run_dir.rglob("*.tmp"))


def test_http_train_csv_from_url_resumes_a_partial_download(server, tmp_path):
    rows = []
    for i in range(12):
        server.bodies[f"g{i}"] = jpeg(i)
        rows.append((hexid(i), server.url(f"g{i}"), 1000 + i % 2))
    files = tmp_path / "files"
    files.mkdir()
    text = pd.DataFrame(rows, columns=["id", "url", "landmark_id"]).to_csv(index=False)
    (files / "train.csv").write_text(text)
    server.root = files
    run_dir = tmp_path / "run"
    # a partial download left by an interrupted run: only the rest is requested (Range)
    (run_dir / "source").mkdir(parents=True)
    (run_dir / "source" / "train.csv.part").write_text(text[:100])
    res = run_in_process("prepare", "data=gldv2_http", f"data.csv={server.base}/files/train.csv", "progress=false", *HTTP,
                         run_dir=run_dir)
    assert res["failed"] == 0 and res["train"] + res["val"] + res["test"] == 12
    assert (run_dir / "source" / "train.csv").read_text() == text
    assert not (run_dir / "source" / "train.csv.part").exists()


def test_train_csv_url_must_be_http(tmp_path):
    # (data.http ranges are checked with every other range in test_config.py)
    with pytest.raises(UserError, match=r"http\(s\)"):
        run_in_process("prepare", "data=gldv2_http", "data.csv=ftp://example.org/train.csv", "progress=false",
                       run_dir=tmp_path / "run")


@pytest.mark.slow  # ~5 s: a killed download; atomic writes are checked by the prepare resume test
def test_killed_http_download_leaves_no_half_written_image(tmp_path, outputs):
    N = 160  # images; the kill comes after 30 of them
    with FakeServer(latency=0.02) as server:
        rows = []
        for i in range(N):
            server.bodies[f"g{i}"] = jpeg(i, (320, 240))
            rows.append((hexid(i), server.url(f"g{i}"), 1000 + i % 4))
        csv = tmp_path / "train.csv"
        pd.DataFrame(rows, columns=["id", "url", "landmark_id"]).to_csv(csv, index=False)
        args = ["prepare", "data=gldv2_http", f"data.csv={csv}", "progress=false", "workers=1", *HTTP[:-2],
                "data.http.concurrency=2", "data.http.per_host=2"]
        env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs), "PYTHONWARNINGS": "ignore"}
        proc = subprocess.Popen([sys.executable, "-m", "landmark_ae", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=REPO, text=True, env=env)

        def journal_has(n: int) -> bool:
            found = list(outputs.glob("prepare/*/done.log"))
            return bool(found) and len(found[0].read_text().splitlines()) > n

        assert wait_for(lambda: journal_has(30) or proc.poll() is not None, 90)
        assert proc.poll() is None, "prepare finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        run_dir = next(outputs.glob("prepare/*/done.log")).parent
        assert '"complete"' not in (run_dir / "run.json").read_text()
        for jpg in run_dir.glob("*/*.jpg"):  # whatever exists is whole
            Image.open(jpg).load()
        done_before = len((run_dir / "done.log").read_text().splitlines())
        server.reset_hits()
        resumed = run_cli(*args, f"resume={run_dir}", outputs=outputs)
        assert resumed.returncode == 0, resumed.stderr
        r = results(resumed)
        assert int(r["train"]) + int(r["val"]) + int(r["test"]) == N and r["failed"] == "0"
        assert sum(server.hits.values()) <= N - done_before + 1  # only what was missing
        assert not list(run_dir.rglob("*.tmp"))  # no partial file of the killed run is left
        for jpg in run_dir.glob("*/*.jpg"):
            Image.open(jpg).load()
