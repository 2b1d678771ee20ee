"""Training at scale, measured in one run: memory as the dataset grows, the cost of streaming batches
from the memory-mapped arrays, and 1 process vs 2 gloo ranks under torchrun.

    python scripts/bench_train_scale.py [sizes=1500,10000,50000] [data_dirs=<prepare run>,...]
        [model=m2] [batch_size=64] [repeat=3] [parts=memory,stream,ranks]

- memory: `landmark-ae train epochs=1` on prepared datasets of `sizes` images (the built-in synthetic
  set, tiled to each size; plus any real prepare runs in `data_dirs`), peak anonymous memory
  (RssAnon of /proc/<pid>/status, sampled every 20 ms: memory-mapped image pages are file-backed
  and can be dropped, so they are not counted), peak and median. Flat = streaming works.
- stream: one epoch of train_one_epoch over the largest size's first 4,096 images, batches read
  and resized from the map (what train does) vs the same images resized once into RAM (what train
  did before): images/s, median of `repeat`, and the ratio.
- ranks: `landmark-ae train` (one process, 2 threads; one process, 1 thread) vs `torchrun
  --nproc-per-node=2` (one thread each) on the middle size: images/s from history.csv, alternating,
  median of `repeat`, ratios against the first. On one 2-core machine this is a correctness path,
  not a speed-up.

Results are key<TAB>value lines on stdout; progress goes to stderr.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from landmark_ae.script_config import parse_args

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def say(*parts: object) -> None:
    print(*parts, sep="\t", flush=True)


def landmark_ae(*args: str, outputs: Path, env: dict | None = None, torchrun: int = 0) -> subprocess.Popen:
    cmd = ([str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={torchrun}", "-m", "landmark_ae"] if torchrun
           else [str(BIN / "landmark-ae")])
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs), **(env or {})}
    return subprocess.Popen([*cmd, *args, f"paths.output_dir={outputs}", "progress=false"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict[str, str]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"bench_train_scale: a command failed:\n{err[-2000:]}")
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def rss_anon_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def anon_mib(proc: subprocess.Popen) -> tuple[float, float, dict[str, str]]:
    """Peak and median RssAnon of a running command (MiB), sampled every 20 ms. The median is the
    steady state: torch's large activation buffers come and go through malloc, so the peak of a
    long run catches more of their swings (about +-30 MiB on M2) than a short one."""
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(rss_anon_kib([proc.pid]))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = finish(proc)
    done.set()
    sampler.join()
    steady = [s for s in samples if s > max(samples) / 2]  # after start-up (imports)
    return max(samples) / 1024, statistics.median(steady) / 1024, out


def tiled_dataset(source: Path, n: int, into: Path) -> Path:
    """A prepare run dir of n images: source's train and val images repeated (a benchmark fixture;
    the arrays are written through a memory map, so this never holds n images in RAM)."""
    from landmark_ae.runs import write_manifest, write_run_record

    into.mkdir(parents=True)
    for split, count in (("train", int(n * 0.8)), ("val", n - int(n * 0.8))):
        images = np.load(source / f"{split}.npy", mmap_mode="r")
        manifest = pd.read_csv(source / f"{split}.csv", dtype={"id": str})
        out = np.lib.format.open_memmap(into / f"{split}.npy", mode="w+", dtype=np.uint8,
                                        shape=(count, *images.shape[1:]))
        for start in range(0, count, len(images)):
            stop = min(start + len(images), count)
            out[start:stop] = images[: stop - start]
        out.flush()
        del out
        rows = manifest.iloc[np.arange(count) % len(manifest)].copy()
        rows["id"] = [f"{i:016x}" for i in range(count)]
        rows.to_csv(into / f"{split}.csv", index=False)
    shutil.copy(source / "dataset.json", into / "dataset.json")
    write_manifest(into, ["train.npy", "train.csv", "val.npy", "val.csv"])
    write_run_record(into, "prepare", "complete", data=json_name(source))
    return into


def json_name(run: Path) -> str:
    import json

    return json.loads((run / "dataset.json").read_text())["data"]["name"]


def stream_rate(data_dir: Path, model: str, batch_size: int, in_memory: bool) -> float:
    """images/s of one epoch over the first 4,096 train images (a fresh model each time)."""
    import torch
    from omegaconf import OmegaConf

    from landmark_ae.config import config_dir
    from landmark_ae.data.prepared import ImageBatches, resize_uint8
    from landmark_ae.model.builder import build_model
    from landmark_ae.train.loop import train_one_epoch
    from landmark_ae.train.objectives import ONE
    from landmark_ae.train.step import ObjectiveModule

    cfg = OmegaConf.to_container(OmegaConf.load(f"{config_dir()}/model/{model}.yaml"))
    cfg.pop("defaults", None)
    size = cfg["input_size"]
    images = np.load(data_dir / "train.npy", mmap_mode="r")[:4096]
    if in_memory:  # the old path: the whole split resized once into RAM; batches are plain indexing
        images = resize_uint8(images, size).permute(0, 2, 3, 1).contiguous().numpy()
    torch.manual_seed(0)
    net = build_model(cfg)
    step = ObjectiveModule(net, None, ONE)
    opt = torch.optim.Adam(net.parameters())
    tick = time.perf_counter()
    train_one_epoch(step, ImageBatches(images, size), opt, batch_size, torch.Generator().manual_seed(0),
                    torch.device("cpu"))
    return len(images) / (time.perf_counter() - tick)


@dataclass
class BenchTrainScaleArgs:
    sizes: list[int] = field(default_factory=lambda: [1500, 10000, 50000])
    data_dirs: list[str] = field(default_factory=list)  # real prepare runs for the memory part
    model: str = "m2"
    batch_size: int = 64
    repeat: int = 3
    parts: list[str] = field(default_factory=lambda: ["memory", "stream", "ranks"])


def main(argv: list[str]) -> None:
    args, _ = parse_args(BenchTrainScaleArgs, argv, "bench_train_scale", doc=__doc__)
    sizes, extra = args.sizes, [Path(p) for p in args.data_dirs]
    model, batch_size, repeat, parts = args.model, str(args.batch_size), args.repeat, set(args.parts)
    work = Path(tempfile.mkdtemp(prefix="bench_train_scale_"))
    try:
        print(f"preparing the built-in dataset in {work}", file=sys.stderr)
        base = Path(finish(landmark_ae("prepare", outputs=work / "base"))["run_dir"])
        datasets = {n: tiled_dataset(base, n, work / f"tiled_{n}") for n in sizes}
        say("model", model)
        say("batch_size", batch_size)
        if "memory" in parts:
            for name, data_dir in [*((f"{n} images", d) for n, d in datasets.items()), *((p.name, p) for p in extra)]:
                print(f"train on {name}", file=sys.stderr)
                peak, median, out = anon_mib(landmark_ae("train", f"data_dir={data_dir}", f"model={model}", "epochs=1",
                                                      f"batch_size={batch_size}", "threads=2", outputs=work / "runs"))
                say(f"peak_anon_mib[{name}]", f"{peak:.0f}")
                say(f"median_anon_mib[{name}]", f"{median:.0f}")
                say(f"images_per_s[{name}]", out["train_images_per_s"])
        if "stream" in parts:
            largest = datasets[max(sizes)]
            rates: dict[str, list[float]] = {"streamed": [], "in_memory": []}
            for _ in range(repeat):
                for kind in rates:
                    rates[kind].append(stream_rate(largest, model, int(batch_size), kind == "in_memory"))
            streamed, in_memory = (statistics.median(rates[k]) for k in ("streamed", "in_memory"))
            say("stream_images_per_s[streamed]", f"{streamed:.0f}")
            say("stream_images_per_s[in_memory]", f"{in_memory:.0f}")
            say("stream_ratio", f"{streamed / in_memory:.2f}")
        if "ranks" in parts:
            middle = datasets[sorted(sizes)[len(sizes) // 2]]
            settings = {"1 process, 2 threads": (1, 2), "1 process, 1 thread": (1, 1), "2 gloo ranks, 1 thread each": (2, 1)}
            speeds: dict[str, list[float]] = {name: [] for name in settings}
            for _ in range(repeat):
                for name, (world, threads) in settings.items():
                    print(f"train: {name}", file=sys.stderr)
                    args = (f"data_dir={middle}", f"model={model}", "epochs=1", f"batch_size={batch_size}")
                    proc = (landmark_ae("train", *args, f"threads={threads}", outputs=work / "runs") if world == 1 else
                            landmark_ae("train", *args, outputs=work / "runs", torchrun=world, env={"OMP_NUM_THREADS": "1"}))
                    speeds[name].append(float(finish(proc)["train_images_per_s"]))
            base = statistics.median(speeds["1 process, 2 threads"])
            for name, values in speeds.items():
                say(f"ranks_images_per_s[{name}]", f"{statistics.median(values):.0f}")
                say(f"ranks_ratio[{name}]", f"{statistics.median(values) / base:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
