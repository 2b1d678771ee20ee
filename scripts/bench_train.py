"""Training throughput (images/s) of a model at different torch thread counts and memory layouts,
measured in one run.

    python scripts/bench_train.py [model=m2] [threads=1,2] [layout=nchw,channels_last]
        [objective=reconstruct|contrastive] [batch_size=64] [steps=30] [repeat=5]

Each setting (threads x layout) runs in its own subprocess (torch fixes its thread pool at start),
alternating, `repeat` times; medians and the ratio against the first setting are printed as
key<TAB>value lines. objective=contrastive times train's real contrastive step (two augmented views,
NT-Xent on the projector, MSE) with the experiment=contrastive objective settings.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass, field

from landmark_ae.script_config import parse_args

CHILD = r"""
import sys, time, torch, torch.nn.functional as F
from omegaconf import OmegaConf
from landmark_ae.config import ObjectiveConfig, config_dir, model_yaml
from landmark_ae.model.builder import build_model
from landmark_ae.train.objectives import contrastive_loss
threads, model_name, batch, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
layout, objective = sys.argv[5], sys.argv[6]
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = model_yaml(model_name)
model = build_model(cfg)
if layout == "channels_last":
    model = model.to(memory_format=torch.channels_last)
opt = torch.optim.Adam(model.parameters())
size = cfg["input_size"]
x = torch.rand(batch, 3, size, size) * 2 - 1
images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
preset = OmegaConf.load(f"{config_dir()}/experiment/contrastive.yaml").objective
obj = OmegaConf.merge(OmegaConf.structured(ObjectiveConfig), preset)
gen = torch.Generator().manual_seed(0)
def step():
    if objective == "contrastive":
        loss = contrastive_loss(model, images, obj, gen)
    else:
        loss = F.mse_loss(model(x), x)
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3): step()
start = time.perf_counter()
for _ in range(steps): step()
print(batch * steps / (time.perf_counter() - start))
"""


@dataclass
class BenchTrainArgs:
    model: str = "m2"
    threads: list[int] = field(default_factory=lambda: [1, 2])
    layout: list[str] = field(default_factory=lambda: ["nchw"])  # nchw, channels_last
    objective: str = "reconstruct"  # reconstruct | contrastive
    batch_size: int = 64
    steps: int = 30
    repeat: int = 5


def main(argv: list[str]) -> None:
    args, _ = parse_args(BenchTrainArgs, argv, "bench_train", doc=__doc__)
    model, batch, steps, repeat = args.model, str(args.batch_size), str(args.steps), args.repeat
    objective, layouts = args.objective, args.layout
    if objective not in ("reconstruct", "contrastive") or not set(layouts) <= {"nchw", "channels_last"}:
        sys.exit("bench_train: objective must be reconstruct|contrastive, layout a list of nchw|channels_last")
    settings = [(t, lay) for t in args.threads for lay in layouts]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    rates: dict[tuple[int, str], list[float]] = {s: [] for s in settings}
    for _ in range(repeat):
        for t, lay in settings:
            out = subprocess.run([sys.executable, "-c", CHILD, str(t), model, batch, steps, lay, objective],
                                 capture_output=True, text=True, check=True, env=env)
            rates[(t, lay)].append(float(out.stdout.strip()))
    print(f"machine\t{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"settings\tmodel={model} objective={objective} batch_size={batch} steps={steps} repeat={repeat}")
    name = lambda t, lay: f"threads_{t}" + (f"_{lay}" if len(layouts) > 1 else "")  # noqa: E731
    base = statistics.median(rates[settings[0]])
    for t, lay in settings:
        med = statistics.median(rates[(t, lay)])
        print(f"{name(t, lay)}_images_per_s\t{med:.0f}\t(ratio vs {name(*settings[0])}: {med / base:.2f})")


if __name__ == "__main__":
    main(sys.argv[1:])
