"""Data-parallel training under `torchrun`: PyTorch's own engine (DistributedDataParallel), no other.

`torchrun --nproc-per-node=N -m landmark_ae train ...` starts N copies of `train`; torchrun sets
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous store in each one's environment (read by
landmark_ae/common.py). Without torchrun WORLD_SIZE is unset and `Ranks.single()` describes the one
process: nothing here runs.

How the ranks split the work (loop.py):
- every rank draws the same seeded permutation and augmentation parameters for the whole global
  batch of `batch_size` images and keeps its own contiguous `batch_size / world_size` rows, so a
  run is deterministic for a given world size and its first step equals one process's step on the
  same global batch;
- DDP averages the gradients; the contrastive loss gathers every rank's projections (with their
  gradients) so NT-Xent contrasts the global batch;
- losses are summed over ranks, so every rank sees the same validation loss and best epoch;
- rank 0 alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

import torch
import torch.distributed as dist

from landmark_ae.common import RUN_STAMP_FORMAT, launched_by_torchrun, rank, world_size
from landmark_ae.errors import UserError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @staticmethod
    def single() -> "Ranks":
        return Ranks()

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints, history, figures and run.json."""
        return self.rank == 0

    def rows(self, total: int) -> tuple[int, int]:
        """This rank's contiguous share [start, stop) of a global batch of `total` rows (total is a
        multiple of world_size: see usable_rows)."""
        share = total // self.world_size
        return self.rank * share, (self.rank + 1) * share

    def usable_rows(self, total: int) -> int:
        """A batch's rows that split evenly over the ranks: the last, short batch of an epoch drops
        its remainder (at most world_size - 1 images, different ones each epoch)."""
        return total - total % self.world_size


def agree_run_stamp() -> str:
    """The run dir's timestamp, the same on every rank: rank 0's clock, shared through torchrun's
    rendezvous store (MASTER_ADDR:MASTER_PORT), before Hydra creates the run dir."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        raise UserError("several ranks need one run dir: launch with torchrun, or pass the same "
                        "hydra.run.dir=<dir> (or resume=<dir>) to every rank")
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=_timeout())
    # Keyed by the torchrun job and its restart, so a restarted group agrees on a fresh stamp.
    key = (f"landmark_ae/run_stamp/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/"
           f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}")
    if rank() == 0:
        store.set(key, datetime.now().strftime(RUN_STAMP_FORMAT))
    return store.get(key).decode()


def _timeout():
    from datetime import timedelta

    return timedelta(seconds=int(os.environ.get("LANDMARK_AE_DIST_TIMEOUT", "600")))


def init_ranks(backend: str, device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group when launched by torchrun (else one process), and the device this rank
    trains on: `cuda:<LOCAL_RANK>` when `device` is CUDA, so each rank drives its own GPU."""
    if not launched_by_torchrun():
        return Ranks.single(), device
    ranks = Ranks(rank(), world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise UserError(f"rank {ranks.rank} has LOCAL_RANK {ranks.local_rank} but this node has "
                            f"{torch.cuda.device_count()} GPU(s): use --nproc-per-node<={torch.cuda.device_count()}")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise UserError("dist.backend=nccl needs CUDA devices: use dist.backend=gloo (or auto) on CPU")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=_timeout(),
                                device_id=device if device.type == "cuda" else None)
    return ranks, device


def close_ranks(ranks: Ranks, finished: bool = False) -> None:
    """Leave the process group. A finished run's ranks first meet at a barrier: a rank tearing gloo down
    while another still talks to it can abort the other; after an error there is no waiting (the other
    ranks may never come)."""
    if ranks.distributed and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def sum_over_ranks(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Element-wise sum of `values` over every rank (a copy; the input is left as it was)."""
    if not ranks.distributed:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


class _GatherRows(torch.autograd.Function):
    """all_gather of equal-sized row blocks, concatenated in rank order, that keeps gradients: the
    backward pass sums every rank's gradient for the whole gathered tensor and hands each rank the
    rows it contributed. (torch.distributed.nn's all_gather needs all-to-all, which gloo lacks.)"""

    @staticmethod
    def forward(ctx, rows: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.share = dist.get_rank(), len(rows)
        parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, rows.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.share : (ctx.rank + 1) * ctx.share]


def gather_rows(rows: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Every rank's `rows`, concatenated in rank order (= the global batch's order); differentiable."""
    if not ranks.distributed:
        return rows
    if not torch.is_grad_enabled() or not rows.requires_grad:
        parts = [torch.empty_like(rows) for _ in range(ranks.world_size)]
        dist.all_gather(parts, rows.contiguous())
        return torch.cat(parts)
    return _GatherRows.apply(rows)
