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

    .venv/bin/python scripts/bench_download.py [latency=0.05] [sequential=1000] [concurrency=64] [per_host=64]
        [workers=2] [limit=10000] [decode=2000] [data=DIR] [out=BENCHMARKS.md]

(`--latency 0.05` and the other `--key value` spellings, `-` for `_`, still work.)
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
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
from landmark_ae.script_config import parse_args  # noqa: E402


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


@dataclass
class BenchDownloadArgs:
    data: str = str(REPO.parent / "shared" / "data" / "landmarks10")
    latency: float = 0.05
    concurrency: int = 64
    per_host: int = 64
    workers: int = 2
    limit: int = 10_000  # rows for the aiohttp run
    sequential: int = 1000  # rows for the sequential baseline
    decode: int = 2000  # files for the draft-mode comparison
    out: str = str(REPO / "BENCHMARKS.md")


SIZE = 96  # the stored size


class Report:
    """The lines printed as they come, kept for BENCHMARKS.md; the figures by name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.figures: dict[str, float] = {}

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)


def measure_downloads(args: BenchDownloadArgs, rows: pd.DataFrame, report: Report) -> None:
    """(a) the aiohttp downloader through prepare's real pipeline (decode, resize, atomic writes,
    journal), (b) the notebook way: one request at a time, full decode, resize."""
    settings = HttpConfig(concurrency=args.concurrency, per_host=args.per_host, retries=2, backoff_base=0.1,
                          user_agent="landmark-ae-bench/0.1")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        arrays, failures = process_rows(rows, Path(tmp), lambda todo: http_results(todo, settings), SIZE, 95,
                                        args.workers, progress=False)
        t_async = time.perf_counter() - t0
    n_async = len(arrays)
    rate_async = n_async / t_async
    report.say(f"(a) aiohttp downloader + decode/resize/store: {n_async} images ({len(failures)} failed) in "
               f"{t_async:.1f}s = {rate_async:.0f} images/s")
    seq = rows.head(args.sequential)
    t0 = time.perf_counter()
    for url in seq["url"]:
        req = urllib.request.Request(url, headers={"User-Agent": "notebook"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
        img = Image.open(io.BytesIO(body)).convert("RGB")
        img.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    t_seq = time.perf_counter() - t0
    rate_seq = len(seq) / t_seq
    report.say(f"(b) sequential urllib + full decode + resize: {len(seq)} images (a subset) in {t_seq:.1f}s = "
               f"{rate_seq:.1f} images/s")
    report.say(f"    ratio (a)/(b): {rate_async / rate_seq:.1f}x")
    report.figures.update(n_async=n_async, rate_async=rate_async, n_seq=len(seq), rate_seq=rate_seq)


def decode_rate(bodies: list[bytes], draft: bool) -> float:
    t = time.perf_counter()
    for b in bodies:
        open_rgb(b, draft_size=SIZE if draft else None).resize((SIZE, SIZE), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return len(bodies) / (time.perf_counter() - t)


def measure_decoding(args: BenchDownloadArgs, data: Path, rows: pd.DataFrame, report: Report) -> None:
    """(c) decode + resize with and without draft mode, on the files and on them upscaled to 1600x1200."""
    files = [data / "images" / i[0] / i[1] / i[2] / f"{i}.jpg" for i in rows["id"].head(args.decode)]
    blobs = [f.read_bytes() for f in files]
    r_full, r_draft = decode_rate(blobs, False), decode_rate(blobs, True)
    report.say(f"(c) decode+resize, {len(blobs)} landmarks10 files (128x128): full {r_full:.0f}/s, draft {r_draft:.0f}/s, "
               f"ratio {r_draft / r_full:.2f}x (no reduced scale fits 128px -> 96px: about 1x expected)")
    big = []
    for b in blobs[:200]:
        buf = io.BytesIO()
        Image.open(io.BytesIO(b)).convert("RGB").resize((1600, 1200), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
        big.append(buf.getvalue())
    r_full_big, r_draft_big = decode_rate(big, False), decode_rate(big, True)
    report.say(f"    the same 200 files upscaled to 1600x1200 (GLDv2-like): full {r_full_big:.1f}/s, "
               f"draft {r_draft_big:.1f}/s, ratio {r_draft_big / r_full_big:.1f}x")
    t = time.perf_counter()
    for b in big:
        prepare_image(b, SIZE)
    report.say(f"    prepare_image (draft, resize, JPEG encode, array) on those: {len(big) / (time.perf_counter() - t):.1f}/s")
    report.figures.update(r_full=r_full, r_draft=r_draft, r_full_big=r_full_big, r_draft_big=r_draft_big)


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return f"{cpu}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def markdown(args: BenchDownloadArgs, report: Report) -> list[str]:
    f = report.figures
    settings_line = (f"latency {args.latency * 1000:.0f} ms per response (local aiohttp server on 127.0.0.1), "
                     f"concurrency {args.concurrency} total / {args.per_host} per host, {args.workers} decode threads, "
                     f"stored size {SIZE}x{SIZE}")
    return [
        "# Benchmarks",
        "",
        "## Downloading and decoding (`scripts/bench_download.py`)",
        "",
        f"- Machine: {machine()}",
        f"- Settings: {settings_line}",
        f"- Data: `landmarks10` (real 128x128 GLDv2-layout JPEGs); (a) all {f['n_async']} rows, "
        f"(b) the first {f['n_seq']} rows (a subset, to keep the run short)",
        f"- Date: {time.strftime('%Y-%m-%d')}",
        "",
        "| measurement | images/s |",
        "|---|---|",
        f"| (a) aiohttp downloader + decode/resize/store (prepare's pipeline) | {f['rate_async']:.0f} |",
        f"| (b) sequential request + full decode + resize (the notebook way) | {f['rate_seq']:.1f} |",
        f"| **ratio (a)/(b)** | **{f['rate_async'] / f['rate_seq']:.1f}x** |",
        f"| decode+resize, 128x128 files, full decode | {f['r_full']:.0f} |",
        f"| decode+resize, 128x128 files, draft mode | {f['r_draft']:.0f} (ratio {f['r_draft'] / f['r_full']:.2f}x) |",
        f"| decode+resize, same files at 1600x1200, full decode | {f['r_full_big']:.1f} |",
        f"| decode+resize, same files at 1600x1200, draft mode | {f['r_draft_big']:.1f} "
        f"(ratio **{f['r_draft_big'] / f['r_full_big']:.1f}x**) |",
        "",
        "Draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale while keeping at least the stored size; "
        "landmarks10's files are already 128x128, so no reduced scale applies there (ratio about 1, "
        "within noise), while GLDv2's originals "
        "(often 800-1600 px wide) decode several times faster.",
        "",
        "Output of the run:",
        "",
        "```text",
        *report.lines,
        "```",
        "",
    ]


def main(argv: list[str]) -> None:
    args, _ = parse_args(BenchDownloadArgs, argv, "bench_download", doc=__doc__)
    data = Path(args.data)
    rows = pd.read_csv(data / "train.csv", dtype={"id": str}).head(args.limit)
    base, stop = serve(data / "images", args.latency)
    rows["url"] = [f"{base}/{i[0]}/{i[1]}/{i[2]}/{i}.jpg" for i in rows["id"]]
    rows["split"] = "train"
    report = Report()
    try:
        measure_downloads(args, rows, report)
    finally:
        stop()
    measure_decoding(args, data, rows, report)
    Path(args.out).write_text("\n".join(markdown(args, report)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
