"""serve's search page (landmark_ae/serve/page.py, serve/static/) in a real headless Chromium (Debian's
/usr/bin/chromium driven by Playwright's Python API), against a real server on 127.0.0.1 answering from
the tiny embed run: an upload through <input type="file"> shows `landmark-ae query`'s top k, clicking a
neighbour searches with it, the browse view marks hits and misses, every image loads, nothing reaches
the console. /image/<row> refuses traversal and bad rows; the token rule covers the page and images.

One server pair (open, and with a token) and one browser per module. A machine without chromium FAILS
here: `make test` installs it (apt-get); the browser tests are never skipped."""

from __future__ import annotations

import asyncio
import csv
import http.client
import json
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from browser import broken_images, chromium, watch
from conftest import run_in_process

TOKEN = "s3cret-page"
SETTINGS = {"k": 10, "max_k": 50, "max_batch": 8, "max_wait_ms": 2.0, "max_queue": 16, "max_body": 8 * 2**20,
            "max_inflight": 64 * 2**20, "max_pixels": 50_000_000, "timeout_s": 20.0}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


@pytest.fixture(scope="module")
def servers(tiny_embedded: Path) -> Iterator[dict[str, str]]:
    """Two apps on one Retriever of tiny_embedded, on 127.0.0.1 in a thread: "open" and "token"."""
    from aiohttp import web

    from landmark_ae.retrieval.embed_run import EmbedRun
    from landmark_ae.retrieval.retriever import Retriever
    from landmark_ae.serve.app import make_app

    retriever = Retriever(EmbedRun(tiny_embedded))
    loop = asyncio.new_event_loop()
    runners: list[web.AppRunner] = []
    urls: dict[str, str] = {}

    async def start() -> None:
        for name, token in (("open", None), ("token", TOKEN)):
            runner = web.AppRunner(make_app(retriever, SETTINGS, token), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            urls[name] = f"http://127.0.0.1:{runner.addresses[0][1]}"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield urls
    finally:
        for runner in runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def query_cli_ids(image: Path, embed_run: Path, k: int, tmp_path: Path, capsys: Any) -> list[str]:
    """`landmark-ae query image=<image> k=<k> format=json`'s ids, through the command's own body."""
    capsys.readouterr()
    run_in_process("query", f"image={image}", f"embed_run={embed_run}", f"k={k}", "format=json",
                   run_dir=tmp_path / f"query-{image.stem}")
    [answer] = json.loads(capsys.readouterr().out)
    return [hit["id"] for hit in answer["neighbours"]]


def shown_ids(page: Any, within: str = "#results") -> list[tuple[str, str]]:
    return [(e.get_attribute("data-rank"), e.get_attribute("data-id")) for e in page.query_selector_all(f"{within} [data-rank]")]


def check_images_loaded(page: Any) -> None:
    assert broken_images(page) == [] and page.evaluate("document.images.length") > 10


def labels_of(embed_run: Path) -> list[int]:
    with open(embed_run / "index.csv", newline="") as f:
        return [int(r["landmark_id"]) for r in csv.DictReader(f)]


def test_upload_shows_the_query_clis_top_k_and_clicking_a_neighbour_searches_with_it(
        servers, browser, tiny_embedded, tiny_prepared, tmp_path, capsys):
    image = sorted((tiny_prepared / "test").glob("*.jpg"))[0]
    page = browser.new_page(viewport={"width": 1280, "height": 3000})  # tall: every lazy thumbnail is in view
    problems = watch(page)
    page.goto(servers["open"] + "/")
    page.fill("#k", "5")
    page.set_input_files("input[type=file]", str(image))
    page.wait_for_selector("body[data-state=ready]")
    got = shown_ids(page)
    assert got == [(str(r), i) for r, i in enumerate(query_cli_ids(image, tiny_embedded, 5, tmp_path, capsys), start=1)]

    second = page.query_selector("#results [data-rank='2']")
    row = second.get_attribute("data-row")
    second.click()
    page.wait_for_selector(f"#results[data-query^='row {row}:']")
    page.wait_for_selector("body[data-state=ready]")
    with open(tiny_embedded / "index.csv", newline="") as f:
        clicked = Path(list(csv.DictReader(f))[int(row)]["path"])
    assert [i for _, i in shown_ids(page)] == query_cli_ids(clicked, tiny_embedded, 5, tmp_path, capsys)
    assert shown_ids(page)[0] == ("1", got[1][1])  # the clicked image is its own nearest

    drop_file(page, "#drop", image.read_bytes())  # a photo dropped on the page searches as one chosen
    page.wait_for_selector("#results[data-query='upload: dropped.jpg']")
    assert shown_ids(page) == got

    page.wait_for_selector("body[data-browse=ready]")
    check_browse_marks(page, labels_of(tiny_embedded))
    assert "m1" in page.inner_text("#card") and "392" in page.inner_text("#card")
    check_images_loaded(page)
    assert problems == []
    page.close()


def drop_file(page: Any, selector: str, data: bytes) -> None:
    """Drop a file named dropped.jpg holding `data` on `selector`, as a drag from the desktop does."""
    transfer = page.evaluate_handle("""(bytes) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], "dropped.jpg", { type: "image/jpeg" }));
        return transfer;
    }""", list(data))
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def check_browse_marks(page: Any, labels: list[int]) -> None:
    """Each test query's row, its neighbours marked match (same landmark) or miss, as index.csv says."""
    rows = page.query_selector_all(".browse-row")
    assert len(rows) == 6  # tiny_prepared's test split
    for row in rows:
        query = int(row.query_selector("[data-rank=query]").get_attribute("data-row"))
        for hit in row.query_selector_all(".strip [data-rank]"):
            same = labels[int(hit.get_attribute("data-row"))] == labels[query]
            assert ("match" if same else "miss") in hit.get_attribute("class").split()


def raw_get(url: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """GET `path` exactly as written (no client normalises `..` or decodes %2e)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_image_rows_only_traversal_and_bad_rows_are_4xx_and_headers(servers, tiny_embedded):
    url = servers["open"]
    status, headers, body = raw_get(url, "/image/0")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    assert headers["Cache-Control"] == "private, no-cache" and headers["ETag"]  # revalidated: 304 below
    assert raw_get(url, "/image/0", {"If-None-Match": headers["ETag"]})[0] == 304
    n_rows = len(labels_of(tiny_embedded))
    bad = ["/image/../run.json", "/image/..%2f..%2fetc%2fpasswd", "/image/%2e%2e%2f", "/image/%2e%2e", "/image//etc/passwd",
           "/image/%2Fetc%2Fpasswd", "/image/-1", "/image/1e3", "/image/%C2%B2", f"/image/{n_rows}",
           "/image/99999999999999999999", "/image/" + "9" * 5000, "/neighbours/" + "9" * 30, "/queries?offset=999999",
           "/queries?limit=0", "/static/..%2fpage.py", "/static/login.html"]
    statuses = {path: raw_get(url, path)[0] for path in bad}
    assert all(400 <= s < 500 for s in statuses.values()), statuses
    assert statuses[f"/image/{n_rows}"] == 404 and statuses["/image/-1"] == 400
    status, _, body = raw_get(url, "/queries?offset=4&limit=2&k=3")  # paged: only these queries are searched
    page = json.loads(body)
    assert status == 200 and (page["split"], page["total"], page["offset"]) == ("test", 6, 4)
    assert [len(q["neighbours"]) for q in page["queries"]] == [3, 3]
    for path in ("/", "/card", "/image/1", "/nope"):
        headers = raw_get(url, path)[1]
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"


def test_the_token_rule_covers_the_page_and_images_and_never_puts_the_token_in_a_url(servers, browser):
    url = servers["token"]
    for path in ("/", "/image/0", "/card", "/queries", "/neighbours/0", "/info"):
        assert raw_get(url, path)[0] == 401, path
    status, _, body = raw_get(url, "/")
    assert b'<form method="post" action="/login">' in body and TOKEN.encode() not in body
    assert raw_get(url, "/static/app.js")[0] == 200  # the package's own code, no data
    assert raw_get(url, "/image/0", {"Authorization": f"Bearer {TOKEN}"})[0] == 200

    page = browser.new_page(viewport={"width": 1280, "height": 3000})
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(url + "/")
    page.fill("input[name=token]", "wrong")
    page.click("button[type=submit]")
    assert "wrong token" in page.inner_text("body")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-browse=ready]")
    check_images_loaded(page)  # thumbnails carry the session cookie
    [cookie] = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    assert requested and not any(TOKEN in u for u in requested)
    page.close()
