"""ONNX Runtime against torch, measured in one run: a one-shot `query`, embed at 48 and 112 px, and
`serve` at a concurrency, on an embed run that holds encoder.onnx (the retrieval recipe's settings).

    python scripts/bench_onnx.py embed_run=<embed run dir> [oneshot=8] [images=1024] [repeat=3]
        [batches=32,64,256] [requests=200] [concurrency=16] [threads=0] [parts=answers,oneshot,embed,serve]

First a check that both runtimes give the same answers on the run's test images (ids in order,
largest distance difference). One-shot queries are fresh processes, in turns with a bare
`python -c "import numpy, PIL, onnxruntime"`; embed times the encode step (resize + encoder +
pooling, what `embed` does per batch) on random 96 px images, each runtime, size and batch size in
turns (round robin), with a torch breakdown (resize alone, encoder alone, channels_last) and embed's
torch path as it was before its channels_last chunks (`torch_whole_nchw`: the baseline); serve is
bench_serve's load against a server per runtime. Medians; quote the ratios with the load average.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from landmark_ae.retrieval.embed_run import EmbedRun
from landmark_ae.script_config import machine, parse_args, query_images

REPO = Path(__file__).resolve().parent.parent


@dataclass
class BenchOnnxArgs:
    embed_run: Optional[str] = None  # required: an embed run with encoder.onnx
    oneshot: int = 8
    images: int = 1024
    repeat: int = 3
    batches: list[int] = field(default_factory=lambda: [32, 64, 256])
    requests: int = 200
    concurrency: int = 16
    threads: int = 0  # 0: each runtime's default
    outputs: str = "/tmp/landmark_ae_bench_outputs"
    parts: list[str] = field(default_factory=lambda: ["answers", "oneshot", "embed", "serve"])


def same_answers(run_dir: Path, paths: list[str], out: dict) -> None:
    import numpy as np

    from landmark_ae.retrieval.embed_run import EmbedRun
    from landmark_ae.retrieval.retriever import Retriever

    run = EmbedRun(run_dir)
    on_torch, on_onnx = Retriever(run, runtime="torch"), Retriever(run, runtime="onnx")
    images = np.stack([on_onnx.load_image(p) for p in paths])
    pairs = list(zip(on_torch.neighbours(images, 10), on_onnx.neighbours(images, 10), strict=True))
    same = sum([h["id"] for h in x] == [h["id"] for h in y] for x, y in pairs)
    out["answers_same_ids_in_order"] = f"{same}/{len(pairs)}"
    diff = max(abs(h["distance"] - g["distance"]) for x, y in pairs for h, g in zip(x, y, strict=True))
    out["answers_max_distance_diff"] = f"{diff:.2e}"


def oneshot(run_dir: Path, paths: list[str], args: BenchOnnxArgs, env: dict, out: dict) -> None:
    commands = {"bare_import": [sys.executable, "-c", "import numpy, PIL, onnxruntime"]}
    for runtime in ("onnx", "torch"):
        commands[f"query_{runtime}"] = [sys.executable, "-m", "landmark_ae", "query", f"image={paths[0]}",
                                        f"embed_run={run_dir}", f"runtime={runtime}"]
    times: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(args.oneshot):
        for name, argv in commands.items():
            if name != "bare_import":
                argv = [*argv[:4], f"image={paths[i % len(paths)]}", *argv[5:]]
            tick = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
            times[name].append(time.perf_counter() - tick)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, value in med.items():
        out[f"oneshot_{name}_s"] = round(value, 3)
    out["oneshot_torch_over_onnx"] = round(med["query_torch"] / med["query_onnx"], 2)
    out["oneshot_onnx_over_bare_import"] = round(med["query_onnx"] / med["bare_import"], 2)


def embed_speed(run_dir: Path, args: BenchOnnxArgs, out: dict) -> None:
    import numpy as np
    import torch

    from landmark_ae.data.prepared import resize_uint8
    from landmark_ae.model.checkpoints import load_checkpoint, model_from_checkpoint
    from landmark_ae.retrieval.embed import embed_images
    from landmark_ae.retrieval.onnx_encoder import OnnxEncoder
    from landmark_ae.retrieval.onnx_export import EncoderGraph, write_graph

    if args.threads:
        torch.set_num_threads(args.threads)
    model = model_from_checkpoint(load_checkpoint(_checkpoint(run_dir))).eval()
    images = np.random.default_rng(0).integers(0, 256, (args.images, 96, 96, 3), dtype=np.uint8)
    cpu = torch.device("cpu")
    tmp = Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    sessions = {}
    for size in (48, 112):
        path = tmp / f"encoder{size}.onnx"
        write_graph(EncoderGraph(model.encoder, 96, size, "flatten", 3.0), images[:4], path, pooled=True)
        sessions[size] = {b: OnnxEncoder(path, b, args.threads, spin=True) for b in args.batches}  # as embed runs it
    timings: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[..., object], *fn_args: object) -> None:
        tick = time.perf_counter()
        fn(*fn_args)
        timings.setdefault(name, []).append(time.perf_counter() - tick)

    resized = {s: resize_uint8(images, s) for s in (48, 112)}
    big = max(args.batches)
    for _ in range(args.repeat):
        for size in (48, 112):
            for b in args.batches:
                timed(f"torch_{size}_b{b}", embed_images, model, images, size, b, cpu)
                timed(f"onnx_{size}_b{b}", sessions[size][b], images)
            timed(f"torch_whole_nchw_{size}_b{big}", embed_whole_batches, model, images, size, big)
            timed(f"torch_resize_{size}", resize_uint8, images, size)
            for layout in (torch.contiguous_format, torch.channels_last):
                name = f"torch_encoder_{size}" + ("_channels_last" if layout == torch.channels_last else "")
                timed(name, encode_resized, model.to(memory_format=layout), resized[size], layout)
        model.to(memory_format=torch.contiguous_format)
    n = len(images)
    for name, t in timings.items():
        out[f"embed_{name}_images_per_s"] = round(n / statistics.median(t))
    med = {name: statistics.median(t) for name, t in timings.items()}
    out[f"embed_112_b{big}_torch_over_onnx"] = round(med[f"torch_112_b{big}"] / med[f"onnx_112_b{big}"], 2)
    best = {rt: min(med[f"{rt}_112_b{b}"] for b in args.batches) for rt in ("torch", "onnx")}
    out["embed_112_best_batch_torch_over_onnx"] = round(best["torch"] / best["onnx"], 2)
    for rt in ("torch", "onnx"):
        out[f"embed_{rt}_112_over_48_b{big}"] = round(med[f"{rt}_112_b{big}"] / med[f"{rt}_48_b{big}"], 2)
    out["pixels_112_over_48"] = round(112**2 / 48**2, 2)
    # embed's torch path before it ran the encoder in channels_last chunks (retrieval/embed.CPU_CHUNK)
    for size in (48, 112):
        out[f"embed_{size}_b{big}_torch_whole_nchw_over_torch"] = round(
            med[f"torch_whole_nchw_{size}_b{big}"] / med[f"torch_{size}_b{big}"], 2)
    out[f"embed_112_b{big}_torch_whole_nchw_over_onnx"] = round(med[f"torch_whole_nchw_112_b{big}"] / med[f"onnx_112_b{big}"], 2)


def embed_whole_batches(model: object, images: object, size: int, batch: int) -> None:
    """embed's torch path as it was: each batch resized and encoded whole, in NCHW."""
    import torch

    from landmark_ae.data.prepared import resize_uint8, to_model_range

    with torch.inference_mode():
        for i in range(0, len(images), batch):
            model.embed(to_model_range(resize_uint8(images[i : i + batch], size)))


def encode_resized(model: object, resized: object, layout: object, batch: int = 256) -> None:
    """The encoder alone on already resized uint8 (N, 3, S, S) images, in `layout`."""
    import torch

    from landmark_ae.data.prepared import to_model_range

    with torch.inference_mode():
        for i in range(0, len(resized), batch):
            model.encoder(to_model_range(resized[i : i + batch]).contiguous(memory_format=layout))


def _checkpoint(run_dir: Path) -> Path:
    import json

    return Path(json.loads((Path(run_dir) / "embed.json").read_text())["checkpoint"])


def serve_speed(run_dir: Path, paths: list[str], args: BenchOnnxArgs, env: dict, out: dict) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_serve import load

    bodies = [Path(p).read_bytes() for p in paths]
    rates = {}
    for runtime in ("onnx", "torch"):
        proc = subprocess.Popen([sys.executable, "-m", "landmark_ae", "serve", f"embed_run={run_dir}", "port=0",
                                 f"threads={args.threads}", f"runtime={runtime}"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            url = proc.stdout.readline().split("\t", 1)[1].strip()
            asyncio.run(load(url, bodies, 20, 1))  # warm up
            seconds, latencies, statuses = asyncio.run(load(url, bodies, args.requests, args.concurrency))
            if set(statuses) != {200}:
                sys.exit(f"bench_onnx: serve runtime={runtime} answered {statuses}")
            rates[runtime] = args.requests / seconds
            out[f"serve_{runtime}_c{args.concurrency}_req_per_s"] = round(rates[runtime], 1)
            out[f"serve_{runtime}_c{args.concurrency}_p50_ms"] = round(statistics.median(latencies), 1)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    out[f"serve_c{args.concurrency}_onnx_over_torch"] = round(rates["onnx"] / rates["torch"], 2)


def main(argv: list[str]) -> None:
    args, _ = parse_args(BenchOnnxArgs, argv, "bench_onnx", doc=__doc__)
    if args.embed_run is None:
        sys.exit(__doc__)
    run_dir = Path(args.embed_run).resolve()
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": args.outputs}
    paths = query_images(EmbedRun(run_dir))
    out: dict[str, object] = {"machine": machine(), "load_average": os.getloadavg()}
    parts = {"answers": lambda: same_answers(run_dir, paths, out), "oneshot": lambda: oneshot(run_dir, paths, args, env, out),
             "embed": lambda: embed_speed(run_dir, args, out), "serve": lambda: serve_speed(run_dir, paths, args, env, out)}
    for name in args.parts:
        parts[name]()
    out["load_average_after"] = os.getloadavg()
    for key, value in out.items():
        print(f"{key}\t{value}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
