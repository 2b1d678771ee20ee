"""Corrupted views for the training objectives, made on uint8 image batches on the training device
(which objective takes which view: the registry in objectives.py).

Every function takes a uint8 (B, 3, H, W) batch and returns a new uint8 batch of the same shape
(augmented: or of another side, `size`);
the clean batch is never modified (it is the reconstruction target). Random parameters are drawn
from the caller's CPU `torch.Generator` (the train run's own, saved in last.pt), then moved to the
batch's device: CPU runs stay deterministic and resume to the same result.

Under torchrun a rank holds rows [start, stop) of a global batch of `total` images (`part`): it draws
the parameters of all `total` rows, as one process would, and keeps its own, so every rank's
generator stays in step and each image gets the view it would get in a one-process run.

    denoise   additive Gaussian noise            noisy(x, g, std)
    augment   random resized crop, horizontal flip, colour jitter   augmented(x, g, ...)
              (contrastive uses two such views per image, plus random greyscale)
    masked    random square patches set to grey  masked(x, g, ratio, patch)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["noisy", "augmented", "masked", "corrupt"]


Part = tuple[int, int, int]  # (start, stop, total): this rank's rows of the global batch


def _rand(shape: tuple[int, ...], generator: torch.Generator, part: Part | None, normal: bool = False) -> torch.Tensor:
    """Random values for every row of the global batch (shape[0] = this batch's rows), this part's rows kept."""
    full = shape if part is None else (part[2], *shape[1:])
    values = (torch.randn if normal else torch.rand)(full, generator=generator)
    return values if part is None else values[part[0] : part[1]]


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator, part: Part | None = None) -> torch.Tensor:
    return _rand((n,), generator, part) * (hi - lo) + lo


def _luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of a (B, 3, H, W) batch, as (B, 1, H, W)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


def noisy(x: torch.Tensor, generator: torch.Generator, std: float, part: Part | None = None) -> torch.Tensor:
    """x plus Gaussian noise; `std` in the model's [-1, 1] units (0.2 = 25.5 grey levels)."""
    noise = _rand(tuple(x.shape), generator, part, normal=True).to(x.device) * (std * 127.5)
    return _to_uint8(x.float() + noise)


def augmented(
    x: torch.Tensor, generator: torch.Generator, crop_scale: float = 0.35, flip: bool = True,
    jitter: float = 0.4, ratio: tuple[float, float] = (3 / 4, 4 / 3), greyscale: float = 0.0,
    part: Part | None = None, size: int | None = None, max_scale: float = 1.0,
) -> torch.Tensor:
    """A random resized crop (area fraction in [crop_scale, max_scale], aspect in `ratio`) resampled
    to `size` x `size` (None: x's own size), mirrored with probability 1/2, then
    brightness/contrast/saturation each scaled by a factor in [1 - jitter, 1 + jitter], then turned
    grey with probability `greyscale`. One affine grid_sample per batch."""
    b = x.shape[0]
    area = _uniform(b, crop_scale, max_scale, generator, part)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), generator, part)
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width / height as fractions of the image
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (_rand((b,), generator, part) * 2 - 1) * (1 - w)  # centre, in [-1, 1] coordinates
    cy = (_rand((b,), generator, part) * 2 - 1) * (1 - h)
    mirror = (_rand((b,), generator, part) < 0.5) if flip else torch.zeros(b, dtype=torch.bool)
    sx = torch.where(mirror, -w, w)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, h, cy
    factors = torch.stack(_uniform(3 * (part[2] if part else b), 1 - jitter, 1 + jitter, generator).chunk(3))
    factors = (factors if part is None else factors[:, part[0] : part[1]]).reshape(3, b, 1, 1, 1)

    xf = x.float()
    out_shape = list(x.shape) if size is None else [b, x.shape[1], int(size), int(size)]
    grid = F.affine_grid(theta.to(x.device), out_shape, align_corners=False)
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
        grey_out = (_rand((b,), generator, part) < greyscale).to(x.device).view(b, 1, 1, 1)
        luma = _luma(out)
        out = torch.where(grey_out, luma.expand_as(out), out)
    return _to_uint8(out)


def masked(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.5, patch: int = 8,
           part: Part | None = None) -> torch.Tensor:
    """Square `patch` x `patch` cells of a grid, each hidden with probability `ratio`, set to grey
    (128, the model range's 0)."""
    b, _, height, width = x.shape
    gh, gw = math.ceil(height / patch), math.ceil(width / patch)
    keep = (_rand((b, 1, gh, gw), generator, part) >= ratio).to(x.device)
    keep = keep.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[:, :, :height, :width]
    return torch.where(keep, x, torch.full_like(x, 128))


def corrupt(x: torch.Tensor, objective, generator: torch.Generator, part: Part | None = None) -> torch.Tensor:
    """The encoder's input under `objective` (an ObjectiveConfig): x itself for `reconstruct`. The
    objective registry (objectives.py) says which view each objective takes."""
    from landmark_ae.train.objectives import objective_for  # objectives.py imports this module

    return objective_for(objective).views(x, objective, generator, part)
