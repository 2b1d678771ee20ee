"""Training throughput (images/s) of a model at different torch thread counts, measured in one run.

    python scripts/bench_train.py [model=m2] [threads=1,2] [batch_size=64] [steps=30] [repeat=5]

Each setting runs in its own subprocess (torch fixes its thread pool at start), alternating, `repeat`
times; medians and the ratio against the first setting are printed as key<TAB>value lines.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time, torch, torch.nn.functional as F
from omegaconf import OmegaConf
from landmark_ae.config import config_dir
from landmark_ae.models import build_model
threads, model_name, batch, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = OmegaConf.to_container(OmegaConf.load(f"{config_dir()}/model/{model_name}.yaml"))
cfg.pop("defaults", None)
model = build_model(cfg)
opt = torch.optim.Adam(model.parameters())
x = torch.rand(batch, 3, cfg["input_size"], cfg["input_size"]) * 2 - 1
def step():
    loss = F.mse_loss(model(x), x); opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3): step()
start = time.perf_counter()
for _ in range(steps): step()
print(batch * steps / (time.perf_counter() - start))
"""


def main(argv: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    model, batch = opts.get("model", "m2"), opts.get("batch_size", "64")
    steps, repeat = opts.get("steps", "30"), int(opts.get("repeat", 5))
    settings = [int(t) for t in opts.get("threads", "1,2").split(",")]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    rates: dict[int, list[float]] = {t: [] for t in settings}
    for _ in range(repeat):
        for t in settings:
            out = subprocess.run([sys.executable, "-c", CHILD, str(t), model, batch, steps],
                                 capture_output=True, text=True, check=True, env=env)
            rates[t].append(float(out.stdout.strip()))
    print(f"machine\t{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"settings\tmodel={model} batch_size={batch} steps={steps} repeat={repeat}")
    base = statistics.median(rates[settings[0]])
    for t in settings:
        med = statistics.median(rates[t])
        print(f"threads_{t}_images_per_s\t{med:.0f}\t(ratio vs threads_{settings[0]}: {med / base:.2f})")


if __name__ == "__main__":
    main(sys.argv[1:])
