"""One training step's machinery: the objective as a module (what DDP and torch.compile wrap),
mixed precision, and how batches reach the device. With the defaults (one process, amp=none,
compile=false) the step is the plain loop: loss, backward, optimizer step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from landmark_ae.config import enum_value
from landmark_ae.errors import UserError
from landmark_ae.model.builder import ConvAutoencoder
from landmark_ae.train.distributed import Ranks
from landmark_ae.train.objectives import objective_for
from landmark_ae.train.views import Part


class ObjectiveModule(nn.Module):
    """The model and its objective as one module whose forward returns the batch's loss: DDP hooks
    its gradient averaging on forward(), so the whole objective (encoder, projector, decoder) runs
    inside it."""

    def __init__(self, model: ConvAutoencoder, objective: Any, ranks: Ranks):
        super().__init__()
        self.model, self.objective, self.ranks = model, objective, ranks
        self.loss = objective_for(objective).train_loss  # looked up once, outside what torch.compile traces

    def forward(self, clean: torch.Tensor, generator: torch.Generator, part: Part | None = None) -> torch.Tensor:
        return self.loss(self.model, clean, self.objective, generator, part, self.ranks)


def _unused_parameters(model: ConvAutoencoder, objective: Any) -> bool:
    """Whether some parameters get no gradient (DDP must then look for them every step): the
    projector outside the contrastive objective, the decoder in a contrastive run without MSE."""
    return objective_for(objective).unused_parameters(model, objective)


def build_step(model: ConvAutoencoder, objective: Any, ranks: Ranks, device: torch.device, sync_bn: bool,
               compile_step: bool) -> nn.Module:
    """The module a training step calls: the objective, wrapped in DDP under torchrun, compiled on
    request. `model` itself stays unwrapped (checkpoints and validation use it)."""
    if sync_bn and ranks.distributed:
        if device.type != "cuda":
            raise UserError("sync_bn=true needs CUDA: SyncBatchNorm does not run on CPU; drop sync_bn on CPU ranks")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    step: nn.Module = ObjectiveModule(model, objective, ranks)
    if ranks.distributed:
        from torch.nn.parallel import DistributedDataParallel

        step = DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=_unused_parameters(model, objective))
    if compile_step:
        step = torch.compile(step)
    return step


@dataclass
class Precision:
    """amp=none|bf16|fp16: autocast around the forward pass; fp16 adds a GradScaler (CUDA only)."""

    device: torch.device
    dtype: torch.dtype | None = None
    scaler: Any = None

    @staticmethod
    def from_config(amp: Any, device: torch.device) -> "Precision":
        amp = enum_value(amp)
        if amp == "none":
            return Precision(device)
        if amp == "fp16":
            if device.type != "cuda":
                raise UserError(f"amp=fp16 needs CUDA (this run is on {device.type}): use amp=bf16, or amp=none")
            return Precision(device, torch.float16, torch.amp.GradScaler("cuda"))
        return Precision(device, torch.bfloat16)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU batch on the training device; on CUDA through pinned memory, so the copy overlaps compute."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)
