"""Throughput and latency of `landmark-ae serve` against one-shot `landmark-ae query` calls and one
batched `query image=-` call, in the same run; then a soak with bad requests mixed in.

    python scripts/bench_serve.py embed_run=<embed run dir> [requests=400] [concurrency=1,8,16]
        [oneshot=8] [soak_s=60] [soak_concurrency=32] [bad=0.1] [threads=0]

Query images are the embed run's own test images (cycled). Prints `key<TAB>value` lines and a
Markdown table on stderr. Quote the ratios: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import aiohttp
import numpy as np

from landmark_ae.retrieval.embed_run import EmbedRun
from landmark_ae.script_config import machine, parse_args, query_images

REPO = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(embed_run: Path, env: dict, threads: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "landmark_ae", "serve", f"embed_run={embed_run}", "port=0",
                             f"threads={threads}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("url\t"):
        sys.exit(f"bench_serve: the server did not start (exit {proc.wait()})")
    return proc, line.split("\t", 1)[1].strip()


async def load(url: str, bodies: list[bytes], total: int, concurrency: int, k: int = 10) -> tuple[float, list[float], dict]:
    """`total` POST /query at `concurrency` in flight; returns (seconds, latencies in ms, status counts)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in counter:
            tick = time.perf_counter()
            async with session.post(f"{url}/query?k={k}", data=bodies[i % len(bodies)]) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            latencies.append((time.perf_counter() - tick) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        tick = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - tick, latencies, statuses


async def soak(url: str, good: list[bytes], bad: list[bytes], seconds: float, concurrency: int, bad_share: float,
               pid: int) -> dict:
    statuses: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    rng = random.Random(0)
    rss = [rss_mb(pid)]

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < stop:
            body = rng.choice(bad) if rng.random() < bad_share else rng.choice(good)
            k = rng.choice(["10", "10", "0", "abc"]) if body in bad else "10"
            async with session.post(f"{url}/query?k={k}", data=body) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

    async def sample_rss() -> None:
        while time.perf_counter() < stop:
            await asyncio.sleep(5)
            rss.append(rss_mb(pid))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(sample_rss(), *(worker(session) for _ in range(concurrency)))
    rss.append(rss_mb(pid))
    return {"statuses": dict(sorted(statuses.items())), "rss_start_mb": rss[0], "rss_end_mb": rss[-1],
            "rss_max_mb": max(rss), "rss_every_5s_mb": [round(r) for r in rss]}


@dataclass
class BenchServeArgs:
    embed_run: Optional[str] = None  # required
    requests: int = 400
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 16])
    oneshot: int = 8
    soak_s: float = 60
    soak_concurrency: int = 32
    bad: float = 0.1  # the soak's share of bad requests
    threads: int = 0
    outputs: str = "/tmp/landmark_ae_bench_outputs"  # where the timed runs go


def cli_baselines(embed_run: Path, paths: list[str], args: BenchServeArgs, env: dict, out: dict) -> None:
    """A fresh process per query, and one process reading all paths on stdin."""
    times = []
    for p in paths[: args.oneshot]:
        tick = time.perf_counter()
        subprocess.run([sys.executable, "-m", "landmark_ae", "query", f"image={p}", f"embed_run={embed_run}"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
        times.append(time.perf_counter() - tick)
    out["cli_oneshot_req_per_s"] = round(1 / statistics.median(times), 3)
    listing = "\n".join(paths[i % len(paths)] for i in range(args.requests)) + "\n"
    tick = time.perf_counter()
    subprocess.run([sys.executable, "-m", "landmark_ae", "query", "image=-", f"embed_run={embed_run}", "format=jsonl"],
                   input=listing, text=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env, cwd=REPO)
    out["cli_stdin_req_per_s"] = round(args.requests / (time.perf_counter() - tick), 1)


def serve_load(url: str, bodies: list[bytes], args: BenchServeArgs, pid: int, out: dict) -> None:
    """Throughput and latency at each concurrency level, then the soak with bad requests mixed in."""
    total = args.requests
    asyncio.run(load(url, bodies, 20, 1))  # warm up
    for c in args.concurrency:
        seconds, lat, statuses = asyncio.run(load(url, bodies, total, c))
        if set(statuses) != {200}:
            sys.exit(f"bench_serve: unexpected statuses {statuses}")
        q = np.percentile(lat, [50, 99])
        out[f"serve_c{c}_req_per_s"] = round(total / seconds, 1)
        out[f"serve_c{c}_p50_ms"] = round(float(q[0]), 1)
        out[f"serve_c{c}_p99_ms"] = round(float(q[1]), 1)
        out[f"serve_c{c}_over_oneshot"] = round(total / seconds / out["cli_oneshot_req_per_s"], 1)
    if args.soak_s > 0:
        bad = [b"<html>not found</html>", bodies[0][: len(bodies[0]) // 3], b""]
        result = asyncio.run(soak(url, bodies, bad, args.soak_s, args.soak_concurrency, args.bad, pid))
        out["soak_s"] = args.soak_s
        out["soak_statuses"] = result["statuses"]
        out["soak_5xx"] = sum(n for s, n in result["statuses"].items() if s >= 500)
        out["soak_rss_start_mb"] = round(result["rss_start_mb"], 1)
        out["soak_rss_end_mb"] = round(result["rss_end_mb"], 1)
        out["soak_rss_max_mb"] = round(result["rss_max_mb"], 1)
        out["soak_rss_every_5s_mb"] = result["rss_every_5s_mb"]


def main(argv: list[str]) -> None:
    args, _ = parse_args(BenchServeArgs, argv, "bench_serve", doc=__doc__)
    if args.embed_run is None:
        sys.exit(__doc__)
    embed_run = Path(args.embed_run).resolve()
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": args.outputs}
    run = EmbedRun(embed_run)
    paths = query_images(run)
    bodies = [Path(p).read_bytes() for p in paths]
    out = {"machine": machine(), "database": f"{len(run.database())} images, dim {run.embeddings.shape[1]}",
           "requests": args.requests}
    cli_baselines(embed_run, paths, args, env, out)
    proc, url = start_server(embed_run, env, str(args.threads))
    try:
        serve_load(url, bodies, args, proc.pid, out)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for key, value in out.items():
        print(f"{key}\t{value}")


if __name__ == "__main__":
    main(sys.argv[1:])
