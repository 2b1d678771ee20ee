"""Corrupted views for the training objectives, made on uint8 image batches on the training device.

Every function takes a uint8 (B, 3, H, W) batch and returns a new uint8 batch of the same shape;
the clean batch is never modified (it is the reconstruction target). Random parameters are drawn
from the caller's CPU `torch.Generator` (the train run's own, saved in last.pt), then moved to the
batch's device: CPU runs stay deterministic and resume to the same result.

    denoise   additive Gaussian noise            noisy(x, g, std)
    augment   random resized crop, horizontal flip, colour jitter   augmented(x, g, ...)
              (contrastive uses two such views per image, plus random greyscale)
    masked    random square patches set to grey  masked(x, g, ratio, patch)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from landmark_ae.config import enum_value

__all__ = ["noisy", "augmented", "masked", "corrupt"]


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (hi - lo) + lo


def _luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of a (B, 3, H, W) batch, as (B, 1, H, W)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


def noisy(x: torch.Tensor, generator: torch.Generator, std: float) -> torch.Tensor:
    """x plus Gaussian noise; `std` in the model's [-1, 1] units (0.2 = 25.5 grey levels)."""
    noise = torch.randn(x.shape, generator=generator).to(x.device) * (std * 127.5)
    return _to_uint8(x.float() + noise)


def augmented(
    x: torch.Tensor, generator: torch.Generator, crop_scale: float = 0.35, flip: bool = True,
    jitter: float = 0.4, ratio: tuple[float, float] = (3 / 4, 4 / 3), greyscale: float = 0.0,
) -> torch.Tensor:
    """A random resized crop (area fraction in [crop_scale, 1], aspect in `ratio`) resampled to the
    full size, mirrored with probability 1/2, then brightness/contrast/saturation each scaled by a
    factor in [1 - jitter, 1 + jitter], then turned grey with probability `greyscale`. One affine
    grid_sample per batch."""
    b = x.shape[0]
    area = _uniform(b, crop_scale, 1.0, generator)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), generator)
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width / height as fractions of the image
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - w)  # centre, in [-1, 1] coordinates
    cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - h)
    mirror = (torch.rand(b, generator=generator) < 0.5) if flip else torch.zeros(b, dtype=torch.bool)
    sx = torch.where(mirror, -w, w)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, h, cy
    factors = _uniform(3 * b, 1 - jitter, 1 + jitter, generator).view(3, b, 1, 1, 1)

    xf = x.float()
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    out = F.grid_sample(xf, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if jitter > 0:
        bright, contrast, sat = (f.to(x.device) for f in factors)
        out = out * bright
        grey = _luma(out)
        out = (out - grey.mean(dim=(2, 3), keepdim=True)) * contrast + grey.mean(dim=(2, 3), keepdim=True)
        grey = _luma(out)
        out = (out - grey) * sat + grey
    if greyscale > 0:
        # Drawn after the other parameters, so greyscale=0 leaves the generator's sequence as it was.
        grey_out = (torch.rand(b, generator=generator) < greyscale).to(x.device).view(b, 1, 1, 1)
        luma = _luma(out)
        out = torch.where(grey_out, luma.expand_as(out), out)
    return _to_uint8(out)


def masked(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.5, patch: int = 8) -> torch.Tensor:
    """Square `patch` x `patch` cells of a grid, each hidden with probability `ratio`, set to grey
    (128, the model range's 0)."""
    b, _, height, width = x.shape
    gh, gw = math.ceil(height / patch), math.ceil(width / patch)
    keep = (torch.rand(b, 1, gh, gw, generator=generator) >= ratio).to(x.device)
    keep = keep.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[:, :, :height, :width]
    return torch.where(keep, x, torch.full_like(x, 128))


def corrupt(x: torch.Tensor, objective, generator: torch.Generator) -> torch.Tensor:
    """The encoder's input under `objective` (an ObjectiveConfig): x itself for `reconstruct`."""
    name = enum_value(objective.name)
    if name == "reconstruct":
        return x
    if name == "denoise":
        return noisy(x, generator, objective.noise_std)
    if name in ("augment", "contrastive"):
        return augmented(x, generator, objective.crop_scale, objective.flip, objective.jitter,
                         greyscale=objective.greyscale)
    if name == "masked":
        return masked(x, generator, objective.mask_ratio, objective.mask_patch)
    raise ValueError(f"unknown objective {name!r}")
