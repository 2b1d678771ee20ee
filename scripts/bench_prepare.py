"""prepare's local source against a bare Pillow loop doing the same work on the same images.

    python scripts/bench_prepare.py [data=../shared/data/landmarks10] [repeat=5] [workers=2] [size=96]
        [quality=95] [limit=0] [source=local|folder]

(a) bare: a ThreadPoolExecutor of `workers` threads over every image of data/train.csv: read the
    file, decode (JPEG draft mode, as prepare), resize to size x size (bicubic, as prepare), JPEG
    encode, write the file. Nothing else: no checks, no journal, no arrays.
(b) prepare: `landmark-ae prepare data=landmarks10 data.root=<data> progress=false` in a subprocess
    into a fresh temp outputs dir. Timed two ways: `images` is the image stage alone (the rate
    prepare logs for decode + resize + store, journal included), `command` is the whole command
    (interpreter start, imports, sampling, the figure, the .npy arrays, the manifest) over the images it
    prepared.
The two run alternately (which goes first alternates too), `repeat` times each; printed as key<TAB>value
lines: each run's images/s, the medians, the ratios prepare/bare of the medians and the median of
the per-repeat ratios (each prepare run against the bare run beside it: steadier on a shared machine),
and CPU milliseconds per image (user + system, all threads; the command's includes its start).
source=folder lays data out as one folder per landmark (named from its landmarks.csv, hard links, in
a temp dir) and (b) runs `landmark-ae prepare data=folder data.root=<that dir>` instead (the listing:
every file hashed, before the image stage), (a) over the same files.
limit=N gives (a) only the first N images, for a quick check of the script: prepare always takes
every row of the landmark range, so the ratios then mean nothing.

    python scripts/bench_prepare.py rss=1000,6000

instead measures memory: for each N, `landmark-ae prepare` of the built-in data with
data.synthetic.n_images=N (64x48 sources, stored at 96x96) in a fresh process, whose peak RSS is reset
(/proc/self/clear_refs) just before process_rows; printed: the peak during process_rows +
write_split_outputs over the RSS when they started, in MiB, beside the size of the .npy files written.
"""

from __future__ import annotations

import io
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
from PIL import Image

from landmark_ae.script_config import parse_args

REPO = Path(__file__).resolve().parent.parent
LOGGED = re.compile(r"prepared (\d+) images in [\d.]+s \(([\d.]+) images/s\)")


def bare(files: list[Path], out_dir: Path, size: int, quality: int, workers: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) of decode + resize + JPEG encode + write, `workers` threads."""

    def one(path: Path) -> None:
        img = Image.open(io.BytesIO(path.read_bytes()))
        img.draft("RGB", (size, size))
        small = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=quality)
        (out_dir / f"{path.stem}.jpg").write_bytes(buf.getvalue())

    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(one, files, chunksize=64):
            pass
    return len(files) / (time.perf_counter() - start), (time.process_time() - cpu) * 1000 / len(files)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def lay_out_as_class_folders(data: Path, ids: list[str], dest: Path) -> list[Path]:
    """data's images (GLDv2 layout) as dest/<landmark name>/<id>.jpg (hard links where possible)."""
    import shutil

    names_csv = data / "landmarks.csv"
    names = (pd.read_csv(names_csv, dtype={"name": str}).set_index("landmark_id")["name"].to_dict()
             if names_csv.is_file() else {})
    labels = pd.read_csv(data / "train.csv", dtype={"id": str}).set_index("id")["landmark_id"]
    files = []
    for i in ids:
        src = data / "images" / i[0] / i[1] / i[2] / f"{i}.jpg"
        if not src.is_file():
            continue
        target = dest / str(names.get(labels[i], labels[i])) / f"{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
        files.append(target)
    return files


def bench_inputs(source: str, data: Path, ids: list[str], layout: Path) -> tuple[list[Path], list[str]]:
    """(the bare loop's files, prepare's data arguments) for source=local or folder."""
    if source == "folder":
        return lay_out_as_class_folders(data, ids, layout), ["data=folder", f"data.root={layout}"]
    if source != "local":
        sys.exit(f"bench_prepare: source={source}: use local or folder")
    files = [data / "images" / i[0] / i[1] / i[2] / f"{i}.jpg" for i in ids]
    return [f for f in files if f.is_file()], ["data=landmarks10", f"data.root={data}"]


def prepare(data_args: list[str], out_dir: Path, workers: int, quality: int) -> tuple[float, float, float, int]:
    """(image-stage images/s as prepare logs it, whole-command images/s, the command's CPU ms per image,
    images prepared)."""
    cmd = [str(Path(sys.executable).with_name("landmark-ae")), "prepare", *data_args,
           f"paths.output_dir={out_dir}", "progress=false", f"workers={workers}", f"jpeg_quality={quality}"]
    start, cpu = time.perf_counter(), children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if proc.returncode != 0:
        sys.exit(f"bench_prepare: prepare failed:\n{proc.stderr[-2000:]}")
    found = LOGGED.search(proc.stderr) or LOGGED.search(
        next(out_dir.glob("prepare/*/prepare.log")).read_text())
    if found is None:
        sys.exit("bench_prepare: prepare's log has no 'prepared N images in ...' line")
    n = int(found.group(1))
    return float(found.group(2)), n / wall, cpu * 1000 / n, n


RSS_CHILD = r"""
import sys
def status(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1]) / 1024
import landmark_ae.data.prepare as P
process_rows, write_split_outputs = P.process_rows, P.write_split_outputs
start = {}
def measured_process_rows(*a, **k):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    start["rss"] = status("VmRSS")
    return process_rows(*a, **k)
def measured_write_split_outputs(*a, **k):
    out = write_split_outputs(*a, **k)
    print(f"step_peak\t{status('VmHWM') - start['rss']:.1f}\t{start['rss']:.0f}", file=sys.stderr)
    return out
P.process_rows, P.write_split_outputs = measured_process_rows, measured_write_split_outputs
sys.argv = ["landmark-ae", *sys.argv[1:]]
from landmark_ae.cli import main
main()
"""


def rss(sizes: list[int]) -> None:
    """Peak RSS growth of prepare's image and array steps at each synthetic dataset size."""
    print(f"machine\t{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
            proc = subprocess.run([sys.executable, "-c", RSS_CHILD, "prepare", f"paths.output_dir={tmp}", "progress=false",
                                   f"data.synthetic.n_images={n}", "data.synthetic.width=64", "data.synthetic.height=48"],
                                  capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:
                sys.exit(f"bench_prepare: prepare failed:\n{proc.stderr[-2000:]}")
            peak, start = next(line for line in proc.stderr.splitlines() if line.startswith("step_peak")).split("\t")[1:]
            npy = sum(p.stat().st_size for p in Path(tmp).glob("prepare/*/*.npy")) / 2**20
        print(f"n_{n}_step_peak_rss_over_start_mib\t{float(peak):.1f}\t(rss at the start {start} MiB; .npy files {npy:.0f} MiB)")


@dataclass
class BenchPrepareArgs:
    data: str = str(REPO.parent / "shared" / "data" / "landmarks10")
    repeat: int = 5
    workers: int = 2
    size: int = 96
    quality: int = 95
    limit: int = 0  # 0: every image
    rss: Optional[list[int]] = None  # measure prepare's memory at these sizes instead
    source: str = "local"  # local: data=landmarks10 as it lies; folder: laid out as class folders, data=folder


def main(argv: list[str]) -> None:
    args, _ = parse_args(BenchPrepareArgs, argv, "bench_prepare", doc=__doc__)
    if args.rss is not None:
        rss(args.rss)
        return
    data = Path(args.data).expanduser().resolve()
    repeat, workers, size, quality, limit = args.repeat, args.workers, args.size, args.quality, args.limit
    ids = pd.read_csv(data / "train.csv", dtype={"id": str})["id"].tolist()
    if limit:
        ids = ids[:limit]
    layout = tempfile.TemporaryDirectory(prefix="bench_prepare_folders_")  # source=folder's class folders
    files, data_args = bench_inputs(args.source, data, ids, Path(layout.name))
    for f in files[:500]:  # warm the page cache for both
        f.read_bytes()

    runs: dict[str, list[float]] = {k: [] for k in ("bare", "prepare_images", "prepare_command", "bare_cpu_ms",
                                                      "prepare_command_cpu_ms")}
    n_prepared = 0

    def run_bare() -> None:
        with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
            rate, cpu_ms = bare(files, Path(tmp), size, quality, workers)
        runs["bare"].append(rate)
        runs["bare_cpu_ms"].append(cpu_ms)

    def run_prepare() -> None:
        nonlocal n_prepared
        with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
            stage, command, cpu_ms, n_prepared = prepare(data_args, Path(tmp), workers, quality)
        runs["prepare_images"].append(stage)
        runs["prepare_command"].append(command)
        runs["prepare_command_cpu_ms"].append(cpu_ms)

    for r in range(repeat):
        for step in ((run_bare, run_prepare) if r % 2 == 0 else (run_prepare, run_bare)):
            step()

    med = {k: statistics.median(v) for k, v in runs.items()}
    paired = {k: statistics.median(p / b for p, b in zip(runs[k], runs["bare"], strict=True))
              for k in ("prepare_images", "prepare_command")}
    print(f"machine\t{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at the end")
    print(f"settings\tdata={data} source={args.source} images={len(files)} (prepare: {n_prepared}) workers={workers} "
          f"size={size} quality={quality} repeat={repeat}")
    for key, values in runs.items():
        print(f"{key}_runs\t" + " ".join(f"{v:.0f}" if "cpu" not in key else f"{v:.2f}" for v in values))
    print(f"bare_images_per_s\t{med['bare']:.0f}")
    print(f"prepare_images_per_s\t{med['prepare_images']:.0f}")
    print(f"prepare_command_images_per_s\t{med['prepare_command']:.0f}")
    print(f"ratio_prepare_images_over_bare\t{med['prepare_images'] / med['bare']:.2f}")
    print(f"ratio_prepare_command_over_bare\t{med['prepare_command'] / med['bare']:.2f}")
    print(f"paired_ratio_prepare_images_over_bare\t{paired['prepare_images']:.2f}")
    print(f"paired_ratio_prepare_command_over_bare\t{paired['prepare_command']:.2f}")
    print(f"bare_cpu_ms_per_image\t{med['bare_cpu_ms']:.3f}")
    print(f"prepare_command_cpu_ms_per_image\t{med['prepare_command_cpu_ms']:.3f}")
    layout.cleanup()

if __name__ == "__main__":
    main(sys.argv[1:])
