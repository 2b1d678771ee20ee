"""`landmark-ae train`: fit an autoencoder to reconstruct its input (MSE), as the seed study does, or
under another objective (objectives.py).

run_train's phases (_train): restore_or_start (a new run, or resume from last.pt) -> build_fit ->
load_splits -> record_start -> plan_schedule -> fit_epochs (train_one_epoch + validation_loss each
epoch; best.pt on a better val loss, history.csv and last.pt every epoch) -> finish (figures,
manifest, results).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from landmark_ae.config import enum_value
from landmark_ae.data.prepared import ImageBatches, dataset_name, load_prepared, to_model_range, to_uint8_hwc
from landmark_ae.device import pick_device
from landmark_ae.errors import UserError
from landmark_ae.model.builder import ConvAutoencoder, build_model
from landmark_ae.model.checkpoints import load_checkpoint, model_from_checkpoint, save_checkpoint
from landmark_ae.runs import Run, atomic_path, read_run_record, write_manifest, write_run_record
from landmark_ae.train.distributed import Ranks, close_ranks, init_ranks, sum_over_ranks
from landmark_ae.train.objectives import OBJECTIVES, ONE, Objective, objective_for, setting
from landmark_ae.train.resumable import check_train_resume
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
    """One pass over `images` in a seeded random order; returns the mean training loss. `step` is the
    model with its objective (step.py: ObjectiveModule, DDP-wrapped under torchrun). `scheduler`, if any,
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
    """The mean validation loss `objective` (an ObjectiveConfig; None: reconstruct) defines, in eval
    mode (BatchNorm uses its running statistics). Views are drawn from a fixed seed, so that epochs
    are compared on the same views. Under torchrun each rank scores its share of every batch and the
    sums are added over ranks: all ranks get the same value."""
    precision = precision or Precision(device)
    model.eval()
    loss_sum = objective_for(objective).val_loss_sum
    generator = torch.Generator().manual_seed(0)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for start, stop in batch_rows(len(images), batch_size, ranks):
        lo, hi = ranks.rows(stop - start)
        batch = to_device(images.slice(start + lo, start + hi), device)
        with precision.autocast():
            total += loss_sum(model, batch, objective, generator, (lo, hi, stop - start) if ranks.distributed else None,
                              ranks)
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
    return Run.resolve(
        cfg.data_dir, cfg.paths.output_dir, "prepare", "data_dir",
        f"run `landmark-ae prepare data={cfg.data.name}` first, or pass data_dir=<prepare run dir>",
        accept=lambda r: r.get("data") == cfg.data.name,
    ).path


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
    if _logger(cfg) is None:  # logger=null: Logger.none once validated
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("logger=tensorboard needs the tensorboard package: pip install landmark-ae[tensorboard]") from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_epoch if start_epoch > 1 else None)


def run_train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    if _logger(cfg) not in LOGGERS:
        raise UserError(f"logger={enum_value(cfg.logger)}: choose one of null, tensorboard")
    threads = cfg.threads or sweep_job_threads()
    if threads:
        if not cfg.threads:
            log.info("torch threads: %d (cores shared by the sweep's parallel jobs; set threads= to choose)", threads)
        torch.set_num_threads(threads)
    ranks, device = init_ranks(enum_value(cfg.dist.backend), pick_device(cfg.device))
    try:
        results = _train(cfg, run_dir, ranks, device)
    except BaseException:
        close_ranks(ranks)
        raise
    close_ranks(ranks, finished=True)
    return results


def _logger(cfg: DictConfig) -> str | None:
    value = enum_value(cfg.logger)
    return None if value in (None, "none", "null") else value


def _train(cfg: DictConfig, run_dir: Path, ranks: Ranks, device: torch.device) -> dict[str, Any]:
    """The run's phases: restore or start, load the splits, fit the epochs, finish."""
    check_global_batch(cfg.batch_size, ranks)
    precision = Precision.from_config(cfg.amp, device)
    start = restore_or_start(cfg, run_dir, ranks)
    fit = build_fit(cfg, run_dir, start, ranks, device, precision)
    fit.train_images, fit.val_images = load_splits(start.data_dir, source_size(start), ranks)
    record_start(fit)
    fit.step = build_step(fit.model, start.objective, ranks, device, cfg.sync_bn, cfg.compile)
    plan_schedule(fit)
    writer = open_tensorboard(cfg, run_dir, len(fit.history) + 1) if ranks.main else None
    fit_epochs(fit, writer)
    return finish(fit, writer)


@dataclass
class Start:
    """What a run starts from: a new run's settings, or those its last.pt saved (a resumed run keeps
    its model, memory layout, objective, dataset and schedule, whatever the command line says now)."""

    model_cfg: dict
    data_dir: Path
    objective: DictConfig  # an ObjectiveConfig
    channels_last: bool
    state: dict | None = None  # last.pt, when resuming from it


def restore_or_start(cfg: DictConfig, run_dir: Path, ranks: Ranks) -> Start:
    """Resume from the run dir's last.pt if it has one, else start the run (again, in place, on the
    dataset it had chosen, if it was killed before its first epoch ended)."""
    last_path = run_dir / "last.pt"
    if cfg.resume or last_path.is_file():
        check_train_resume(run_dir, ranks.world_size)
    if last_path.is_file():
        state = load_checkpoint(last_path)
        log.info("resuming %s from epoch %d of %s", state["model_config"]["name"], state["epoch"], run_dir)
        return Start(state["model_config"], Path(state["data_dir"]), OmegaConf.create(state["objective"]),
                     bool(state["channels_last"]), state)
    started_on = (read_run_record(run_dir) or {}).get("data_dir") if cfg.resume else None
    data_dir = Path(started_on) if started_on else _resolve_data_dir(cfg)
    return Start(OmegaConf.to_container(cfg.model, resolve=True), data_dir, cfg.objective, bool(cfg.channels_last))


@dataclass
class Fit:
    """A run's training state: what the epochs work on and what they add to."""

    cfg: DictConfig
    run_dir: Path
    start: Start
    ranks: Ranks
    device: torch.device
    precision: Precision
    model: ConvAutoencoder
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"val_loss": math.inf, "epoch": 0})
    train_images: Any = None  # ImageBatches (load_splits)
    val_images: Any = None
    record: dict = field(default_factory=dict)  # run.json's fields (record_start)
    step: Any = None  # the model with its objective (step.build_step)
    schedule: dict = field(default_factory=dict)  # name, epochs, batches (plan_schedule)
    scheduler: Any = None

    @property
    def objective(self) -> Objective:
        return objective_for(self.start.objective)

    @property
    def batches(self) -> int:
        return len(batch_rows(len(self.train_images), self.cfg.batch_size, self.ranks))


def build_fit(cfg: DictConfig, run_dir: Path, start: Start, ranks: Ranks, device: torch.device,
              precision: Precision) -> Fit:
    """The seeded model, its optimizer and the run's generator; a resumed run's weights, generator
    state, history and best epoch (the optimizer's state comes with its schedule: plan_schedule)."""
    torch.manual_seed(cfg.seed)
    model = build_model(start.model_cfg).to(device)
    if start.channels_last:
        # NHWC weights make CPU (oneDNN) convolutions faster on M5 (1.10x images/s, BENCHMARKS.md);
        # numbers differ from NCHW in the last float bits only, and a run is deterministic either way.
        model = model.to(memory_format=torch.channels_last)
    try:
        optimizer = instantiate(cfg.optimizer, params=model.parameters())
    except Exception as exc:
        raise UserError(f"optimizer: cannot build {cfg.optimizer.get('_target_')}: {str(exc).splitlines()[0]}") from None
    fit = Fit(cfg, run_dir, start, ranks, device, precision, model, optimizer, torch.Generator().manual_seed(cfg.seed))
    if start.state is not None:
        model.load_state_dict(start.state["state_dict"])
        fit.generator.set_state(start.state["generator"])
        fit.history, fit.best = list(start.state["history"]), dict(start.state["best"])
    return fit


def source_size(start: Start) -> int:
    """The side the loop reads images at: the model's input size, or the contrastive objective's
    source_size (its views are cut from that and resampled to the input size)."""
    chosen = setting(start.objective, "source_size", None) if enum_value(start.objective.name) == "contrastive" else None
    return int(chosen or start.model_cfg["input_size"])


def load_splits(data_dir: Path, size: int, ranks: Ranks) -> tuple[ImageBatches, ImageBatches]:
    """The train and val images, read from the memory-mapped arrays and resized batch by batch as
    they go (memory stays flat in the dataset's size)."""
    splits = load_prepared(data_dir, ("train", "val"), manifests=False)
    train_images, val_images = ImageBatches(splits["train"].images, size), ImageBatches(splits["val"].images, size)
    if min(len(train_images), len(val_images)) < ranks.world_size:  # one image per rank at least
        per_rank = f" and hold one image for each of the {ranks.world_size} ranks" if ranks.distributed else ""
        raise UserError(f"{data_dir} has {len(train_images)} train and {len(val_images)} val images: both must be "
                        f"non-empty{per_rank}")
    return train_images, val_images


def record_start(fit: Fit) -> None:
    """run.json says the run is running, on what (rank 0 writes it); the log says what it trains."""
    cfg, start, ranks = fit.cfg, fit.start, fit.ranks
    data_name = dataset_name(start.data_dir)
    if data_name != cfg.data.name and start.state is None:
        log.info("%s holds the prepared %s dataset: recorded as such (data=%s does not apply)", start.data_dir,
                 data_name, cfg.data.name)
    fit.record = dict(data=data_name, data_dir=str(start.data_dir), model=start.model_cfg["name"],
                      objective=OmegaConf.to_container(start.objective, resolve=True, enum_to_str=True),
                      world_size=ranks.world_size)
    if ranks.main:
        write_run_record(fit.run_dir, "train", "running", **fit.record)
    log.info("training %s (objective %s) on %d images (val %d) from %s on %s%s", start.model_cfg["name"],
             fit.record["objective"]["name"], len(fit.train_images), len(fit.val_images), start.data_dir, fit.device,
             f", {ranks.world_size} ranks of {cfg.batch_size // ranks.world_size} images a batch"
             if ranks.distributed else "")


def plan_schedule(fit: Fit) -> None:
    """The lr schedule spans the epochs the run started with; a resumed run keeps it (and may not
    outrun it, nor change the batches an epoch holds). A resumed run's optimizer and scheduler get
    their saved state."""
    cfg, state, batches = fit.cfg, fit.start.state, fit.batches
    if state is None:
        fit.schedule = {"name": enum_value(cfg.lr_schedule), "epochs": cfg.epochs, "batches": batches}
    else:
        fit.schedule = dict(state["schedule"])
    name, epochs = fit.schedule["name"], fit.schedule["epochs"]
    if name != "constant" and cfg.epochs > epochs:
        raise UserError(f"this run's {name} schedule ends at epoch {epochs}: "
                        f"resume it with epochs<={epochs}, or start a new run for more epochs")
    if name != "constant" and batches != fit.schedule["batches"]:
        raise UserError(f"this run's {name} schedule counts {fit.schedule['batches']} batches an epoch, "
                        f"batch_size={cfg.batch_size} gives {batches}: resume with the batch_size it started with")
    # The scheduler is built on the fresh optimizer (its max lr is the configured lr), then both get
    # their saved state: building it after loading would take the resumed lr as the max and reset the
    # optimizer's lr and momentum to the schedule's first step.
    fit.scheduler = make_scheduler(name, fit.optimizer, epochs, fit.schedule["batches"])
    if state is not None:
        fit.optimizer.load_state_dict(state["optimizer"])
        if fit.scheduler is not None:
            fit.scheduler.load_state_dict(state["scheduler"])


def fit_epochs(fit: Fit, writer: Any) -> None:
    """Train and validate each epoch still to run; rank 0 saves after each (save_epoch)."""
    from landmark_ae.ui import progress_bar

    cfg, start_epoch = fit.cfg, len(fit.history) + 1
    with progress_bar(cfg.progress) as bar:
        task = bar.add_task(f"train {fit.start.model_cfg['name']}", total=fit.batches * max(cfg.epochs - start_epoch + 1, 0),
                            status="")
        for epoch in range(start_epoch, cfg.epochs + 1):

            def on_batch(loss: torch.Tensor, epoch: int = epoch) -> None:
                # Reading the loss waits for the device: on a GPU only every 20th batch's is read.
                quiet = fit.device.type == "cuda" and bar.tasks[task].completed % 20
                status = {} if quiet else {"status": f"epoch {epoch}/{cfg.epochs} loss {float(loss):.4f}"}
                bar.update(task, advance=1, **status)

            row = fit_one_epoch(fit, epoch, on_batch)
            improved = row["val_loss"] < fit.best["val_loss"]
            if improved:
                fit.best = {"val_loss": row["val_loss"], "epoch": epoch}
            if fit.ranks.main:  # rank 0 alone writes
                save_epoch(fit, row, improved, writer)


def fit_one_epoch(fit: Fit, epoch: int, on_batch: Callable[[torch.Tensor], None]) -> dict[str, Any]:
    """One epoch's training pass and validation pass: its history.csv row, added to the history."""
    cfg, tick = fit.cfg, time.perf_counter()
    train_loss = train_one_epoch(fit.step, fit.train_images, fit.optimizer, cfg.batch_size, fit.generator, fit.device,
                                 on_batch, fit.scheduler, fit.ranks, fit.precision)
    train_seconds = time.perf_counter() - tick
    val_loss = validation_loss(fit.model, fit.val_images, cfg.batch_size, fit.device, fit.start.objective, fit.ranks,
                               fit.precision)
    train_name, val_name = fit.objective.loss_names
    row = {"epoch": epoch, train_name: train_loss, val_name: val_loss, "seconds": round(time.perf_counter() - tick, 3),
           "images_per_s": round(len(fit.train_images) / train_seconds, 1)}
    fit.history.append(row)
    log.info("epoch %d/%d train %.5f val %.5f (%.1fs, %.0f images/s)", epoch, cfg.epochs,
             train_loss, val_loss, row["seconds"], row["images_per_s"])
    return row


def save_epoch(fit: Fit, row: dict[str, Any], improved: bool, writer: Any) -> None:
    """An epoch's files: best.pt if it improved, history.csv, then last.pt (and its TensorBoard scalars)."""
    epoch, (train_name, val_name) = row["epoch"], fit.objective.loss_names
    if writer is not None:
        writer.add_scalar("loss/train", row[train_name], epoch)
        writer.add_scalar("loss/val", row[val_name], epoch)
        writer.add_scalar("lr", fit.optimizer.param_groups[0]["lr"], epoch)
        writer.add_scalar("images_per_s", row["images_per_s"], epoch)
        writer.flush()
    run_dir, model = fit.run_dir, fit.model
    common = dict(model_config=fit.start.model_cfg, data_dir=str(fit.start.data_dir), data=fit.record["data"],
                  train_run=str(run_dir), objective=fit.record["objective"], channels_last=fit.start.channels_last,
                  world_size=fit.ranks.world_size)
    if improved:
        save_checkpoint(run_dir / "best.pt", state_dict=model.state_dict(), epoch=epoch, val_loss=row[val_name], **common)
    with atomic_path(run_dir / "history.csv") as tmp:
        pd.DataFrame(fit.history).to_csv(tmp, index=False)
    # last.pt is written last: a run killed before it resumes from the previous epoch and
    # redoes this one, rewriting best.pt and history.csv the same way.
    save_checkpoint(run_dir / "last.pt", state_dict=model.state_dict(), epoch=epoch, optimizer=fit.optimizer.state_dict(),
                    generator=fit.generator.get_state(), history=fit.history, best=fit.best, schedule=fit.schedule,
                    scheduler=fit.scheduler.state_dict() if fit.scheduler is not None else None, **common)


def finish(fit: Fit, writer: Any) -> dict[str, Any]:
    """The run's results; on rank 0 also its figures, manifest and `complete` record."""
    history, best, run_dir = fit.history, fit.best, fit.run_dir
    speeds = sorted(h["images_per_s"] for h in history)
    results = {
        "run_dir": run_dir,
        "model": fit.start.model_cfg["name"],
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "best_val_loss": f"{best['val_loss']:.6f}",
        "train_images_per_s": speeds[len(speeds) // 2] if speeds else 0,
    }
    if fit.ranks.distributed:
        results["world_size"] = fit.ranks.world_size
    if not fit.ranks.main:
        return results
    # The model rebuilds images at its input size, whatever side the views were cut from.
    val_at_input = ImageBatches(fit.val_images.images, int(fit.start.model_cfg["input_size"]))
    write_figures(run_dir, history, run_dir / "best.pt", val_at_input, fit.cfg.recon_images,
                  fit.start.model_cfg["name"], fit.device, fit.objective)
    if writer is not None:
        if (run_dir / "reconstructions.png").is_file():
            import numpy as np
            from PIL import Image

            with Image.open(run_dir / "reconstructions.png") as figure:
                writer.add_image("reconstructions", np.asarray(figure.convert("RGB")), len(history), dataformats="HWC")
        writer.close()
    write_manifest(run_dir, ["best.pt", "last.pt", "history.csv"])
    write_run_record(run_dir, "train", "complete", best_val_loss=best["val_loss"], best_epoch=best["epoch"], **fit.record)
    return results


def write_figures(run_dir: Path, history: list[dict], best_path: Path, val_images: ImageBatches, n: int,
                  name: str, device: torch.device, objective: Objective = OBJECTIVES["reconstruct"]) -> None:
    """loss_curve.png (the history's two losses, as the objective names them) and reconstructions.png
    (the first `n` validation images rebuilt by best.pt)."""
    from landmark_ae.figures import plot_losses, plot_reconstructions

    if not history:
        return
    train_name, val_name = objective.loss_names
    plot_losses([h["epoch"] for h in history], [h[train_name] for h in history], [h[val_name] for h in history],
                run_dir / "loss_curve.png", f"{name}: {objective.loss_label} loss")
    model = model_from_checkpoint(load_checkpoint(best_path)).to(device).eval()
    x = to_model_range(val_images.slice(0, min(n, len(val_images)))).to(device)
    with torch.inference_mode():
        recon = model(x)
    plot_reconstructions(to_uint8_hwc(x), to_uint8_hwc(recon), run_dir / "reconstructions.png",
                         f"{name}: validation images (top) and reconstructions (bottom)")
