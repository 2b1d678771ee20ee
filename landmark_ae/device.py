"""Choosing the torch device: `auto` prefers cuda, then mps, then cpu.

Every command that runs a model (train, embed, query, serve) takes its device from `pick_device`, so a
device this machine cannot run on is one line before any work: not a device name, a device type that
cannot run a model (`meta`, ...), CUDA or MPS not available here, or a CUDA index past the last GPU.
"""

from __future__ import annotations

import torch

from landmark_ae.errors import UserError

RUNNABLE = ("cpu", "cuda", "mps")  # the device types a model runs on here


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and bool(mps.is_available())


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"device={name} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in RUNNABLE:
        raise UserError(f"device={name} cannot run the model: use auto, cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device={name} but CUDA is not available here: use device=auto or device=cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(f"device={name} but this machine has {count} CUDA device(s), cuda:0 to "
                            f"cuda:{count - 1}: use device=cuda or one of those")
    if device.type == "mps" and not _mps_available():
        raise UserError(f"device={name} but MPS (Apple GPUs) is not available here: use device=auto or device=cpu")
    return device
