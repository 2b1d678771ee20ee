"""The training objectives' corrupted views (landmark_ae/train/views.py): shapes, dtype, determinism,
clean target untouched, greyscale views."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from landmark_ae.config import ObjectiveConfig
from landmark_ae.train.views import augmented, corrupt, masked, noisy


def batch(n: int = 4, size: int = 12) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def objective(**kw) -> object:
    return OmegaConf.merge(OmegaConf.structured(ObjectiveConfig), kw)


@pytest.mark.parametrize("name", ["reconstruct", "denoise", "augment", "masked"])
def test_views_keep_shape_dtype_and_are_deterministic_given_a_generator(name):
    x = batch()
    before = x.clone()
    a = corrupt(x, objective(name=name), torch.Generator().manual_seed(7))
    b = corrupt(x, objective(name=name), torch.Generator().manual_seed(7))
    c = corrupt(x, objective(name=name), torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b)  # same generator state, same view
    assert torch.equal(x, before)  # the clean target is never modified
    assert torch.equal(a, x) if name == "reconstruct" else not torch.equal(a, c)


def test_augment_identity_settings_return_the_image():
    x = batch()
    same = augmented(x, torch.Generator().manual_seed(0), crop_scale=1.0, flip=False, jitter=0.0, ratio=(1.0, 1.0))
    assert torch.equal(same, x)  # a full-size crop, no flip, no jitter
    mirrored = augmented(x, torch.Generator().manual_seed(0), crop_scale=1.0, flip=True, jitter=0.0, ratio=(1.0, 1.0))
    flipped = [torch.equal(mirrored[i], x[i].flip(-1)) or torch.equal(mirrored[i], x[i]) for i in range(len(x))]
    assert all(flipped)


def test_greyscale_views():
    x = batch(16)
    grey = augmented(x, torch.Generator().manual_seed(0), greyscale=1.0)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    # greyscale=0 draws nothing extra: the colour views are exactly what they were before the option
    colour = augmented(x, torch.Generator().manual_seed(0), greyscale=0.0)
    assert torch.equal(colour, augmented(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(colour[:, 0], colour[:, 1])
    # some but not all views of a batch turn grey at 0.5
    half = augmented(x, torch.Generator().manual_seed(0), greyscale=0.5)
    is_grey = [(v[0] == v[1]).all() and (v[1] == v[2]).all() for v in half]
    assert 0 < sum(is_grey) < len(is_grey)


def test_masked_hides_whole_patches_with_grey():
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    out = masked(x, torch.Generator().manual_seed(0), ratio=0.5, patch=4)
    cells = out.view(2, 3, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(2, 4, -1)
    assert set(cells.amax(-1).flatten().tolist()) <= {0, 128}
    assert torch.equal(cells.amax(-1), cells.amin(-1))  # each patch all grey or all kept
    assert torch.equal(masked(x, torch.Generator(), ratio=0.0, patch=4), x)


def test_noise_is_in_model_units():
    x = torch.full((64, 3, 16, 16), 128, dtype=torch.uint8)
    out = noisy(x, torch.Generator().manual_seed(0), std=0.2).float()
    assert out.std().item() == pytest.approx(0.2 * 127.5, rel=0.1)
