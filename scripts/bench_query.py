"""Wall time of one `landmark-ae query` next to `python -c "import torch"`, medians over repeated runs.

    python scripts/bench_query.py embed_run=<embed run dir> [image=<query image>] [repeat=7] [k=10]

Both are timed in the same run, alternating, so machine noise hits both alike; the ratio is what to quote.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from landmark_ae.script_config import parse_args


@dataclass
class BenchQueryArgs:
    embed_run: Optional[str] = None  # required
    image: Optional[str] = None  # default: the embed run's first test image
    repeat: int = 7
    k: int = 10
    outputs: str = "/tmp/landmark_ae_bench_outputs"  # where the timed queries' runs go


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    args, _ = parse_args(BenchQueryArgs, argv, "bench_query", doc=__doc__)
    if args.embed_run is None:
        sys.exit("usage: python scripts/bench_query.py embed_run=<embed run dir> [image=...] [repeat=7] [k=10]")
    embed_run = Path(args.embed_run)
    image = args.image
    if image is None:
        index = (embed_run / "index.csv").read_text().splitlines()[1:]
        image = next(line.split(",")[3] for line in index if line.split(",")[2] == "test")
    n_db = sum(1 for line in (embed_run / "index.csv").read_text().splitlines()[1:] if line.split(",")[2] != "test")
    repeat, k = args.repeat, args.k
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": args.outputs}
    query = [sys.executable, "-m", "landmark_ae", "query", f"image={image}", f"embed_run={embed_run}", f"k={k}"]
    torch_only = [sys.executable, "-c", "import torch"]
    timed(query, env), timed(torch_only, env)  # warm the file cache
    q_times, t_times = [], []
    for _ in range(repeat):
        q_times.append(timed(query, env))
        t_times.append(timed(torch_only, env))
    q, t = statistics.median(q_times), statistics.median(t_times)
    print(f"machine\t{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    import numpy as np

    dim = np.load(embed_run / "embeddings.npy", mmap_mode="r").shape[1]
    print(f"database\t{n_db} images (train+val), dim {dim}")
    print(f"repeats\t{repeat}")
    print(f"query_median_s\t{q:.2f}")
    print(f"import_torch_median_s\t{t:.2f}")
    print(f"ratio_query_over_import_torch\t{q / t:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
