"""`landmark-ae train`: fit an autoencoder to reconstruct its input (MSE), as the seed study does.

A train run dir holds:
    best.pt        best-validation weights + the resolved model config (rebuilds the model alone)
    last.pt        everything needed to resume: weights, optimizer, RNG state, history
    history.csv    epoch, train_loss, val_loss, seconds, images_per_s
    loss_curve.png, reconstructions.png, run.json
    tensorboard/   with logger=tensorboard: losses, lr and images/s per epoch, the reconstructions
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from landmark_ae.config import enum_value
from landmark_ae.data.prepared import ImageBatches, dataset_name, load_prepared, to_model_range, to_uint8_hwc
from landmark_ae.device import pick_device
from landmark_ae.errors import UserError
from landmark_ae.model.builder import ConvAutoencoder, build_model
from landmark_ae.model.checkpoints import load_checkpoint, model_from_checkpoint, save_checkpoint
from landmark_ae.runs import atomic_path, read_run_record, resolve_run, write_manifest, write_run_record
from landmark_ae.train.distributed import Ranks, close_ranks, init_ranks, sum_over_ranks
from landmark_ae.train.objectives import ONE, contrastive_loss
from landmark_ae.train.step import Precision, build_step, to_device

log = logging.getLogger(__name__)

def batch_rows(n: int, batch_size: int, ranks: Ranks = ONE) -> list[tuple[int, int]]:
    """The [start, stop) rows of each batch an epoch runs over n images: under torchrun each batch
    keeps the rows that split evenly over the ranks (the last, short batch drops at most
    world_size - 1 images), and a batch too short for every rank to get one is skipped."""
    spans = ((start, min(start + batch_size, n)) for start in range(0, n, batch_size))
    return [(a, a + ranks.usable_rows(b - a)) for a, b in spans if ranks.usable_rows(b - a)]


def check_global_batch(batch_size: int, ranks: Ranks) -> None:
    if batch_size % ranks.world_size:
        raise UserError(f"batch_size={batch_size} is the global batch and must split evenly over the "
                        f"{ranks.world_size} ranks: use a multiple of {ranks.world_size}")


def train_one_epoch(
    step: torch.nn.Module, images: ImageBatches, optimizer: torch.optim.Optimizer, batch_size: int,
    generator: torch.Generator, device: torch.device, on_batch: Callable[[torch.Tensor], None] = lambda loss: None,
    scheduler: Any = None, ranks: Ranks = ONE, precision: Precision | None = None,
) -> float:
    """One pass over `images` in a seeded random order; returns the mean loss. `step` is the model
    with its objective (step.py: ObjectiveModule, DDP-wrapped under torchrun). `scheduler`, if any,
    is stepped after every batch. The loss is summed on the device and read once an epoch, so the
    GPU never waits for the host."""
    precision = precision or Precision(device)
    step.train()
    order = torch.randperm(len(images), generator=generator)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for start, stop in batch_rows(len(images), batch_size, ranks):
        lo, hi = ranks.rows(stop - start)
        clean = to_device(images.take(order[start + lo : start + hi]), device)
        with precision.autocast():
            loss = step(clean, generator, (lo, hi, stop - start) if ranks.distributed else None)
        precision.backward_and_step(loss, optimizer)
        if scheduler is not None:
            scheduler.step()
        total += loss.detach().double() * len(clean)
        count += len(clean)
        on_batch(loss.detach())
    total, count = sum_over_ranks(torch.stack([total, total.new_tensor(count)]), ranks)
    return (total / count).item()


@torch.inference_mode()
def validation_loss(model: ConvAutoencoder, images: ImageBatches, batch_size: int, device: torch.device,
                    objective: Any = None, ranks: Ranks = ONE, precision: Precision | None = None) -> float:
    """Validation loss (eval mode: BatchNorm uses its running statistics): the mean reconstruction
    MSE of the clean images, or for the contrastive objective its own loss on views drawn from a
    fixed seed, so that epochs are compared on the same views. Under torchrun each rank scores its
    share of every batch and the sums are added over ranks: all ranks get the same value."""
    precision = precision or Precision(device)
    model.eval()
    contrastive = objective is not None and objective.name == "contrastive"
    generator = torch.Generator().manual_seed(0)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for start, stop in batch_rows(len(images), batch_size, ranks):
        lo, hi = ranks.rows(stop - start)
        batch = to_device(images.slice(start + lo, start + hi), device)
        with precision.autocast():
            if contrastive:
                part = (lo, hi, stop - start) if ranks.distributed else None
                total += contrastive_loss(model, batch, objective, generator, part, ranks).double() * len(batch)
            else:
                x = to_model_range(batch)
                total += F.mse_loss(model(x).float(), x, reduction="sum").double() / x[0].numel()
        count += len(batch)
    total, count = sum_over_ranks(torch.stack([total, total.new_tensor(count)]), ranks)
    return (total / count).item()


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int, batches: int):
    """The learning-rate schedule, stepped once per batch; None for `constant`."""
    if name == "constant":
        return None
    steps = epochs * batches
    if steps < 3:
        raise UserError(f"lr_schedule={name} needs at least 3 batches in all, but epochs={epochs} x {batches} "
                        f"batch(es) an epoch = {steps}: train more epochs, use a smaller batch_size, or "
                        "lr_schedule=constant")
    max_lr = [group["lr"] for group in optimizer.param_groups]
    # Cycle momentum (Adam's beta1) only where the optimizer has one: plain SGD has none to cycle.
    cycle = any(group.get("betas") or group.get("momentum") for group in optimizer.param_groups)
    # Warm up over 5% of the steps, but over at least one whole step: OneCycleLR divides by the
    # warm-up's length in steps minus one, which is <= 0 for short runs (5% of 20 steps = 1).
    pct_start = 0.05 if 0.05 * steps > 1 else 2 / steps
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps, pct_start=pct_start,
                                               cycle_momentum=cycle)


def _resolve_data_dir(cfg: DictConfig) -> Path:
    return resolve_run(
        cfg.data_dir, cfg.paths.output_dir, "prepare", "data_dir",
        f"run `landmark-ae prepare data={cfg.data.name}` first, or pass data_dir=<prepare run dir>",
        accept=lambda r: r.get("data") == cfg.data.name,
    )


LOGGERS = (None, "tensorboard")


def sweep_job_threads() -> int:
    """Torch threads for one job of a parallel sweep (`-m hydra/launcher=joblib`): the cores shared
    evenly by the jobs running at once (hydra.launcher.n_jobs; joblib's -1 = all cores, -2 = all but
    one, ...), at least 1. 0 (torch's own choice) outside such a sweep.

    torch's default pool takes every core in every job, and on a shared machine that collapses to a
    quarter of the throughput (BENCHMARKS.md, "Training throughput by torch thread count": 546 images/s
    with 2 threads alone, 72 images/s beside another busy process, 309 with 1 thread)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 0
    launcher = HydraConfig.get().get("launcher") or {}
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 0
    import joblib

    cores = joblib.cpu_count()
    n_jobs = int(launcher.get("n_jobs") or -1)
    parallel = n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)
    return max(cores // min(parallel, cores), 1)


def open_tensorboard(cfg: DictConfig, run_dir: Path, start_epoch: int) -> Any:
    """A SummaryWriter on <run dir>/tensorboard/ for logger=tensorboard, else None. A resumed run purges
    the events from its first redone epoch on, so no epoch is logged twice."""
    if cfg.logger is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("logger=tensorboard needs the tensorboard package: pip install landmark-ae[tensorboard]") from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_epoch if start_epoch > 1 else None)


def run_train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    if cfg.logger not in LOGGERS:
        raise UserError(f"logger={cfg.logger}: choose one of null, tensorboard")
    threads = cfg.threads or sweep_job_threads()
    if threads:
        if not cfg.threads:
            log.info("torch threads: %d (cores shared by the sweep's parallel jobs; set threads= to choose)", threads)
        torch.set_num_threads(threads)
    ranks, device = init_ranks(enum_value(cfg.dist.backend), pick_device(cfg.device))
    try:
        return _train(cfg, run_dir, ranks, device)
    finally:
        close_ranks(ranks)


def _train(cfg: DictConfig, run_dir: Path, ranks: Ranks, device: torch.device) -> dict[str, Any]:
    check_global_batch(cfg.batch_size, ranks)
    precision = Precision.from_config(cfg.amp, device)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"

    state = load_checkpoint(last_path) if last_path.is_file() else None
    if state is not None:
        model_cfg, data_dir = state["model_config"], Path(state["data_dir"])
        log.info("resuming %s from epoch %d of %s", model_cfg["name"], state["epoch"], run_dir)
    else:
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        # Killed before its first epoch ended: start again in place, on the dataset it had chosen.
        started_on = (read_run_record(run_dir) or {}).get("data_dir") if cfg.resume else None
        data_dir = Path(started_on) if started_on else _resolve_data_dir(cfg)

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(device)
    # A resumed run keeps its memory layout, objective and dataset, whatever the command line says now.
    channels_last = bool(state["channels_last"]) if state is not None else bool(cfg.channels_last)
    if channels_last:
        # NHWC weights make CPU (oneDNN) convolutions faster on M5 (1.10x images/s, BENCHMARKS.md);
        # numbers differ from NCHW in the last float bits only, and a run is deterministic either way.
        model = model.to(memory_format=torch.channels_last)
    try:
        optimizer = instantiate(cfg.optimizer, params=model.parameters())
    except Exception as exc:
        raise UserError(f"optimizer: cannot build {cfg.optimizer.get('_target_')}: {str(exc).splitlines()[0]}") from None
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best = {"val_loss": math.inf, "epoch": 0}
    if state is not None:
        model.load_state_dict(state["state_dict"])
        generator.set_state(state["generator"])
        history, best = list(state["history"]), dict(state["best"])

    objective_cfg = OmegaConf.create(state["objective"]) if state is not None else cfg.objective
    objective = objective_cfg if objective_cfg.name != "reconstruct" else None  # None: the seed's loop
    splits = load_prepared(data_dir, ("train", "val"), manifests=False)
    size = int(model_cfg["input_size"])
    # Batches are read from the memory-mapped arrays and resized as they go: memory stays flat.
    train_images = ImageBatches(splits["train"].images, size)
    val_images = ImageBatches(splits["val"].images, size)
    if min(len(train_images), len(val_images)) < ranks.world_size:  # one image per rank at least
        per_rank = f" and hold one image for each of the {ranks.world_size} ranks" if ranks.distributed else ""
        raise UserError(f"{data_dir} has {len(train_images)} train and {len(val_images)} val images: both must be "
                        f"non-empty{per_rank}")
    data_name = dataset_name(data_dir)
    if data_name != cfg.data.name and state is None:
        log.info("%s holds the prepared %s dataset: recorded as such (data=%s does not apply)", data_dir, data_name,
                 cfg.data.name)
    record = dict(data=data_name, data_dir=str(data_dir), model=model_cfg["name"],
                  objective=OmegaConf.to_container(objective_cfg, resolve=True, enum_to_str=True),
                  world_size=ranks.world_size)
    if ranks.main:
        write_run_record(run_dir, "train", "running", **record)
    log.info("training %s (objective %s) on %d images (val %d) from %s on %s%s", model_cfg["name"],
             record["objective"]["name"], len(train_images), len(val_images), data_dir, device,
             f", {ranks.world_size} ranks of {cfg.batch_size // ranks.world_size} images a batch"
             if ranks.distributed else "")
    step = build_step(model, objective, ranks, device, cfg.sync_bn, cfg.compile)

    from landmark_ae.ui import progress_bar

    start_epoch = len(history) + 1
    batches = len(batch_rows(len(train_images), cfg.batch_size, ranks))
    # The schedule spans the epochs the run started with; a resumed run keeps it (and may not outrun it).
    if state is None:
        schedule = {"name": enum_value(cfg.lr_schedule), "epochs": cfg.epochs, "batches": batches}
    else:
        schedule = dict(state["schedule"])
    if schedule["name"] != "constant" and cfg.epochs > schedule["epochs"]:
        raise UserError(f"this run's {schedule['name']} schedule ends at epoch {schedule['epochs']}: "
                        f"resume it with epochs<={schedule['epochs']}, or start a new run for more epochs")
    if schedule["name"] != "constant" and batches != schedule["batches"]:
        raise UserError(f"this run's {schedule['name']} schedule counts {schedule['batches']} batches an epoch, "
                        f"batch_size={cfg.batch_size} gives {batches}: resume with the batch_size it started with")
    # The scheduler is built on the fresh optimizer (its max lr is the configured lr), then both get
    # their saved state: building it after loading would take the resumed lr as the max and reset the
    # optimizer's lr and momentum to the schedule's first step.
    scheduler = make_scheduler(schedule["name"], optimizer, schedule["epochs"], schedule["batches"])
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
    writer = open_tensorboard(cfg, run_dir, start_epoch) if ranks.main else None
    with progress_bar(cfg.progress) as bar:
        task = bar.add_task(f"train {model_cfg['name']}", total=batches * max(cfg.epochs - start_epoch + 1, 0), status="")
        for epoch in range(start_epoch, cfg.epochs + 1):
            tick = time.perf_counter()

            def on_batch(loss: torch.Tensor, epoch: int = epoch) -> None:
                # Reading the loss waits for the device: on a GPU only every 20th batch's is read.
                quiet = device.type == "cuda" and bar.tasks[task].completed % 20
                status = {} if quiet else {"status": f"epoch {epoch}/{cfg.epochs} loss {float(loss):.4f}"}
                bar.update(task, advance=1, **status)

            train_loss = train_one_epoch(step, train_images, optimizer, cfg.batch_size, generator, device, on_batch,
                                         scheduler, ranks, precision)
            train_seconds = time.perf_counter() - tick
            val_loss = validation_loss(model, val_images, cfg.batch_size, device, objective, ranks, precision)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                   "seconds": round(time.perf_counter() - tick, 3),
                   "images_per_s": round(len(train_images) / train_seconds, 1)}
            history.append(row)
            log.info("epoch %d/%d train %.5f val %.5f (%.1fs, %.0f images/s)", epoch, cfg.epochs,
                     train_loss, val_loss, row["seconds"], row["images_per_s"])
            if val_loss < best["val_loss"]:
                best = {"val_loss": val_loss, "epoch": epoch}
                improved = True
            else:
                improved = False
            if not ranks.main:
                continue  # rank 0 alone writes
            if writer is not None:
                writer.add_scalar("loss/train", train_loss, epoch)
                writer.add_scalar("loss/val", val_loss, epoch)
                writer.add_scalar("lr", optimizer.param_groups[0]["lr"], epoch)
                writer.add_scalar("images_per_s", row["images_per_s"], epoch)
                writer.flush()
            common = dict(model_config=model_cfg, data_dir=str(data_dir), data=data_name, train_run=str(run_dir),
                          objective=record["objective"], channels_last=channels_last, world_size=ranks.world_size)
            if improved:
                save_checkpoint(best_path, state_dict=model.state_dict(), epoch=epoch, val_loss=val_loss, **common)
            with atomic_path(run_dir / "history.csv") as tmp:
                pd.DataFrame(history).to_csv(tmp, index=False)
            # last.pt is written last: a run killed before it resumes from the previous epoch and
            # redoes this one, rewriting best.pt and history.csv the same way.
            save_checkpoint(last_path, state_dict=model.state_dict(), epoch=epoch, optimizer=optimizer.state_dict(),
                            generator=generator.get_state(), history=history, best=best, schedule=schedule,
                            scheduler=scheduler.state_dict() if scheduler is not None else None, **common)

    speeds = sorted(h["images_per_s"] for h in history)
    results = {
        "run_dir": run_dir,
        "model": model_cfg["name"],
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "best_val_loss": f"{best['val_loss']:.6f}",
        "train_images_per_s": speeds[len(speeds) // 2] if speeds else 0,
    }
    if ranks.distributed:
        results["world_size"] = ranks.world_size
    if not ranks.main:
        return results
    loss_name = "NT-Xent + MSE" if record["objective"]["name"] == "contrastive" else "MSE"
    write_figures(run_dir, history, best_path, val_images, cfg.recon_images, model_cfg["name"], device, loss_name)
    if writer is not None:
        if (run_dir / "reconstructions.png").is_file():
            import numpy as np
            from PIL import Image

            with Image.open(run_dir / "reconstructions.png") as figure:
                writer.add_image("reconstructions", np.asarray(figure.convert("RGB")), len(history), dataformats="HWC")
        writer.close()
    write_manifest(run_dir, ["best.pt", "last.pt", "history.csv"])
    write_run_record(run_dir, "train", "complete", best_val_loss=best["val_loss"], best_epoch=best["epoch"], **record)
    return results


def write_figures(run_dir: Path, history: list[dict], best_path: Path, val_images: ImageBatches, n: int,
                  name: str, device: torch.device, loss_name: str = "MSE") -> None:
    from landmark_ae.figures import plot_losses, plot_reconstructions

    if not history:
        return
    plot_losses([h["epoch"] for h in history], [h["train_loss"] for h in history],
                [h["val_loss"] for h in history], run_dir / "loss_curve.png", f"{name}: {loss_name} loss")
    model = model_from_checkpoint(load_checkpoint(best_path)).to(device).eval()
    x = to_model_range(val_images.slice(0, min(n, len(val_images)))).to(device)
    with torch.inference_mode():
        recon = model(x)
    plot_reconstructions(to_uint8_hwc(x), to_uint8_hwc(recon), run_dir / "reconstructions.png",
                         f"{name}: validation images (top) and reconstructions (bottom)")

