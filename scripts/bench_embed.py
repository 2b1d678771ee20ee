"""Images/s of `embed` (resize + encoder) by embed input size, against the model's training size.

    python scripts/bench_embed.py [model=m5] [sizes=48,80,112,128] [images=1024] [repeat=5] [threads=2]

What `input_size=` costs (`embed`, `query`, `serve` all embed at it). Every size is timed in the
same run, in turns (round robin), on the same 96 px uint8 images (random; the cost does not depend
on the pixels), with the model's random initial weights; the medians' ratios are what to quote.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Optional

from landmark_ae.script_config import parse_args


@dataclass
class BenchEmbedArgs:
    model: str = "m5"
    sizes: Optional[list[int]] = None  # default: the model's training size, 80, 112, 128
    images: int = 1024
    repeat: int = 5
    threads: int = 2


def main(argv: list[str]) -> None:
    args, _ = parse_args(BenchEmbedArgs, argv, "bench_embed", doc=__doc__)
    import numpy as np
    import torch

    from landmark_ae.config import model_yaml
    from landmark_ae.model.builder import build_model
    from landmark_ae.retrieval.embed import embed_images

    torch.set_num_threads(args.threads)
    cfg = model_yaml(args.model)
    trained = int(cfg["input_size"])
    sizes = list(args.sizes or [trained, 80, 112, 128])
    if trained not in sizes:
        sizes.insert(0, trained)
    n, repeat = args.images, args.repeat
    model = build_model(cfg).eval()
    images = np.random.default_rng(0).integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
    device = torch.device("cpu")
    times: dict[int, list[float]] = {s: [] for s in sizes}
    for s in sizes:  # warm-up: one batch at each size
        embed_images(model, images[:64], s, 64, device)
    for _ in range(repeat):
        for s in sizes:
            tick = time.perf_counter()
            embed_images(model, images, s, 256, device)
            times[s].append(time.perf_counter() - tick)
    print(f"machine\t{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model\t{cfg['name']} (trained at {trained} px), {n} images of 96 px, medians of {repeat}")
    base = statistics.median(times[trained])
    for s in sizes:
        med = statistics.median(times[s])
        print(f"size_{s}\t{n / med:.0f} images/s\t{med / base:.2f}x the time at {trained}")


if __name__ == "__main__":
    main(sys.argv[1:])
