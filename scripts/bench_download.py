"""Benchmark: the aiohttp downloader vs the notebook's sequential loop, and JPEG draft decoding.

Serves ../shared/data/landmarks10 (or --data DIR) (10,000 real 128x128 JPEGs) from a local aiohttp server that
adds a fixed latency to every response (like a CDN round trip), then measures, in one run:
  (a) images/s of prepare's http source (aiohttp downloader -> decode + resize + store, the real
      process_rows pipeline) over all rows;
  (b) images/s of a sequential one-request-at-a-time loop with a full decode and resize (the
      notebook way: urllib + PIL) over a subset;
  (c) decode+resize images/s with and without JPEG draft mode, on the same files and on the same
      files upscaled to a GLDv2-like 1600x1200.
Prints the ratios and writes them, with the machine and settings, to BENCHMARKS.md.

    .venv/bin/python scripts/bench_download.py [--latency 0.05] [--sequential 1000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
from aiohttp import web
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from landmark_ae.config import HttpConfig  # noqa: E402
from landmark_ae.data.images import open_rgb, prepare_image  # noqa: E402
from landmark_ae.data.prepare import process_rows  # noqa: E402
from landmark_ae.data.sources.http import http_results  # noqa: E402


def _server_process(root: str, latency: float, port_q) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        path = (Path(root) / request.match_info["path"]).resolve()
        if not path.is_file():
            return web.Response(status=404)
        return web.Response(body=path.read_bytes(), content_type="image/jpeg")

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/{path:.+}", handler)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_q.put(site._server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(run())


def serve(root: Path, latency: float) -> tuple[str, callable]:
    """The image server in a process of its own (so it does not share the client's GIL)."""
    q = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_server_process, args=(str(root), latency, q), daemon=True)
    proc.start()
    port = q.get(timeout=30)

    def stop() -> None:
        proc.terminate()
        proc.join(5)

    return f"http://127.0.0.1:{port}", stop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "landmarks10"))
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--per-host", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=10_000, help="rows for the aiohttp run")
    ap.add_argument("--sequential", type=int, default=1000, help="rows for the sequential baseline")
    ap.add_argument("--decode", type=int, default=2000, help="files for the draft-mode comparison")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args()

    data = Path(args.data)
    rows = pd.read_csv(data / "train.csv", dtype={"id": str}).head(args.limit)
    base, stop = serve(data / "images", args.latency)
    rows["url"] = [f"{base}/{i[0]}/{i[1]}/{i[2]}/{i}.jpg" for i in rows["id"]]
    rows["split"] = "train"
    size = 96
    lines = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    # (a) the aiohttp downloader through prepare's real pipeline (decode, resize, atomic writes, journal)
    settings = HttpConfig(concurrency=args.concurrency, per_host=args.per_host, retries=2, backoff_base=0.1,
                            user_agent="landmark-ae-bench/0.1")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        arrays, failures = process_rows(rows, Path(tmp), lambda todo: http_results(todo, settings), size, 95,
                                        args.workers, progress=False)
        t_async = time.perf_counter() - t0
    n_async = len(arrays)
    rate_async = n_async / t_async
    say(f"(a) aiohttp downloader + decode/resize/store: {n_async} images ({len(failures)} failed) in "
        f"{t_async:.1f}s = {rate_async:.0f} images/s")

    # (b) the notebook way: one request at a time, full decode, resize
    seq = rows.head(args.sequential)
    t0 = time.perf_counter()
    for url in seq["url"]:
        req = urllib.request.Request(url, headers={"User-Agent": "notebook"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
        img = Image.open(io.BytesIO(body)).convert("RGB")
        img.resize((size, size), Image.Resampling.BICUBIC)
    t_seq = time.perf_counter() - t0
    rate_seq = len(seq) / t_seq
    say(f"(b) sequential urllib + full decode + resize: {len(seq)} images (a subset) in {t_seq:.1f}s = "
        f"{rate_seq:.1f} images/s")
    say(f"    ratio (a)/(b): {rate_async / rate_seq:.1f}x")
    stop()

    # (c) decode + resize with and without draft mode
    files = [data / "images" / i[0] / i[1] / i[2] / f"{i}.jpg" for i in rows["id"].head(args.decode)]
    blobs = [f.read_bytes() for f in files]

    def rate(bodies: list[bytes], draft: bool) -> float:
        t = time.perf_counter()
        for b in bodies:
            open_rgb(b, draft_size=size if draft else None).resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        return len(bodies) / (time.perf_counter() - t)

    r_full, r_draft = rate(blobs, False), rate(blobs, True)
    say(f"(c) decode+resize, {len(blobs)} landmarks10 files (128x128): full {r_full:.0f}/s, draft {r_draft:.0f}/s, "
        f"ratio {r_draft / r_full:.2f}x (no reduced scale fits 128px -> 96px: about 1x expected)")
    big = []
    for b in blobs[:200]:
        buf = io.BytesIO()
        Image.open(io.BytesIO(b)).convert("RGB").resize((1600, 1200), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
        big.append(buf.getvalue())
    r_full_big, r_draft_big = rate(big, False), rate(big, True)
    say(f"    the same 200 files upscaled to 1600x1200 (GLDv2-like): full {r_full_big:.1f}/s, draft {r_draft_big:.1f}/s, "
        f"ratio {r_draft_big / r_full_big:.1f}x")
    t = time.perf_counter()
    for b in big:
        prepare_image(b, size)
    say(f"    prepare_image (draft, resize, JPEG encode, array) on those: {len(big) / (time.perf_counter() - t):.1f}/s")

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    machine = f"{cpu}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    settings_line = (f"latency {args.latency * 1000:.0f} ms per response (local aiohttp server on 127.0.0.1), "
                     f"concurrency {args.concurrency} total / {args.per_host} per host, {args.workers} decode threads, "
                     f"stored size {size}x{size}")
    md = [
        "# Benchmarks",
        "",
        "## Downloading and decoding (`scripts/bench_download.py`)",
        "",
        f"- Machine: {machine}",
        f"- Settings: {settings_line}",
        f"- Data: `landmarks10` (real 128x128 GLDv2-layout JPEGs); (a) all {n_async} rows, "
        f"(b) the first {len(seq)} rows (a subset, to keep the run short)",
        f"- Date: {time.strftime('%Y-%m-%d')}",
        "",
        "| measurement | images/s |",
        "|---|---|",
        f"| (a) aiohttp downloader + decode/resize/store (prepare's pipeline) | {rate_async:.0f} |",
        f"| (b) sequential request + full decode + resize (the notebook way) | {rate_seq:.1f} |",
        f"| **ratio (a)/(b)** | **{rate_async / rate_seq:.1f}x** |",
        f"| decode+resize, 128x128 files, full decode | {r_full:.0f} |",
        f"| decode+resize, 128x128 files, draft mode | {r_draft:.0f} (ratio {r_draft / r_full:.2f}x) |",
        f"| decode+resize, same files at 1600x1200, full decode | {r_full_big:.1f} |",
        f"| decode+resize, same files at 1600x1200, draft mode | {r_draft_big:.1f} (ratio **{r_draft_big / r_full_big:.1f}x**) |",
        "",
        "Draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale while keeping at least the stored size; "
        "landmarks10's files are already 128x128, so no reduced scale applies there (ratio about 1, "
        "within noise), while GLDv2's originals "
        "(often 800-1600 px wide) decode several times faster.",
        "",
        "Output of the run:",
        "",
        "```text",
        *lines,
        "```",
        "",
    ]
    Path(args.out).write_text("\n".join(md))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
