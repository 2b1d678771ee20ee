"""The training objectives' corrupted views: shapes, dtype, determinism, clean target untouched."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from landmark_ae.train.views import augmented, corrupt, masked, noisy
from landmark_ae.config import ObjectiveConfig
from landmark_ae.model.builder import build_model
from landmark_ae.train.objectives import objective_loss, view_disagreement


def batch() -> torch.Tensor:
    return torch.randint(0, 256, (4, 3, 12, 12), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


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


def test_view_disagreement_is_zero_for_equal_views_and_scale_free():
    a = torch.randn(32, 5, generator=torch.Generator().manual_seed(0))
    assert view_disagreement(a, a).item() == pytest.approx(0.0, abs=1e-4)
    assert view_disagreement(a, 3 * a + 1).item() == pytest.approx(0.0, abs=1e-4)
    assert view_disagreement(a, -a).item() == pytest.approx(2.0, abs=1e-3)


def test_cross_redundancy_counts_only_off_diagonal_correlation():
    from landmark_ae.train.objectives import cross_redundancy

    a = torch.randn(4096, 3, generator=torch.Generator().manual_seed(0))
    assert cross_redundancy(a, a).item() == pytest.approx(0.0, abs=2e-3)  # independent dims
    copies = a[:, :1].repeat(1, 3)
    assert cross_redundancy(copies, copies).item() == pytest.approx(1.0, abs=1e-3)  # one feature three times


def test_objective_loss_backpropagates_for_every_objective(m4_cfg):
    model = build_model(m4_cfg)
    x = torch.randint(0, 256, (4, 3, 92, 92), dtype=torch.uint8)
    for obj in (None, objective(name="masked"), objective(name="augment", invariance=0.5, redundancy=1.0)):
        model.zero_grad()
        loss = objective_loss(model, x, obj, torch.Generator().manual_seed(0))
        loss.backward()
        assert torch.isfinite(loss) and model.encoder[0].weight.grad.abs().sum() > 0


@pytest.fixture
def m4_cfg() -> dict:
    from test_m4 import model_cfg

    return model_cfg("m4")


def test_training_with_views_is_deterministic_and_resumable_from_the_generator():
    from test_m4 import model_cfg

    from landmark_ae.train.loop import train_one_epoch

    images = torch.randint(0, 256, (24, 3, 92, 92), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    obj = objective(name="augment", invariance=1.0)

    def run(epochs: int, state=None):
        torch.manual_seed(0)
        model = build_model(model_cfg("m1"))
        opt = torch.optim.Adam(model.parameters())
        gen = torch.Generator().manual_seed(0)
        if state is not None:
            model.load_state_dict(state[0]); opt.load_state_dict(state[1]); gen.set_state(state[2])
        losses = [train_one_epoch(model, images, opt, 8, gen, torch.device("cpu"), objective=obj) for _ in range(epochs)]
        return losses, (model.state_dict(), opt.state_dict(), gen.get_state())

    straight, _ = run(2)
    assert straight == run(2)[0]
    first, state = run(1)
    second, _ = run(1, state)
    assert first + second == straight
