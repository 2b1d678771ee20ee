"""The training losses (landmark_ae/train/objectives.py): NT-Xent against hand-computed values, the
view-disagreement and redundancy terms, every objective backpropagating."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import batches, model_config
from omegaconf import OmegaConf

from landmark_ae.config import ObjectiveConfig
from landmark_ae.model.builder import build_model
from landmark_ae.train.loop import validation_loss
from landmark_ae.train.objectives import contrastive_loss, cross_redundancy, nt_xent, objective_loss, view_disagreement


def objective(**kw) -> object:
    return OmegaConf.merge(OmegaConf.structured(ObjectiveConfig), kw)


def contrastive(**kw) -> object:
    return objective(name="contrastive", crop_scale=0.2, greyscale=0.2, **kw)


def images(n: int, size: int = 48, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_nt_xent_matches_hand_computed_values():
    # Rows 0/2 and 1/3 are the two views of two images; partners are identical, the other image
    # orthogonal. Each row's logits over the other three rows: (0, 1/t, 0), partner in the middle.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert nt_xent(z, 1.0).item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
    assert nt_xent(z, 0.5).item() == pytest.approx(math.log(1 + 2 * math.exp(-2)), rel=1e-6)
    # Scale does not matter (cosine similarity); swapping partners for strangers costs more.
    assert nt_xent(3 * z, 1.0).item() == pytest.approx(nt_xent(z, 1.0).item(), rel=1e-6)
    crossed = z[[0, 1, 3, 2]]  # each row's partner is now orthogonal, a stranger identical: (0, 0, 1/t)
    assert nt_xent(crossed, 1.0).item() == pytest.approx(math.log(2 + math.e), rel=1e-6)
    # One image: its partner is the only candidate, nothing to learn.
    assert nt_xent(torch.tensor([[1.0, 2.0], [-3.0, 0.5]]), 0.2).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError):
        nt_xent(torch.ones(3, 2), 1.0)


def test_view_disagreement_is_zero_for_equal_views_and_scale_free():
    a = torch.randn(32, 5, generator=torch.Generator().manual_seed(0))
    assert view_disagreement(a, a).item() == pytest.approx(0.0, abs=1e-4)
    assert view_disagreement(a, 3 * a + 1).item() == pytest.approx(0.0, abs=1e-4)
    assert view_disagreement(a, -a).item() == pytest.approx(2.0, abs=1e-3)


def test_cross_redundancy_counts_only_off_diagonal_correlation():
    a = torch.randn(4096, 3, generator=torch.Generator().manual_seed(0))
    assert cross_redundancy(a, a).item() == pytest.approx(0.0, abs=2e-3)  # independent dims
    copies = a[:, :1].repeat(1, 3)
    assert cross_redundancy(copies, copies).item() == pytest.approx(1.0, abs=1e-3)  # one feature three times


def test_objective_loss_backpropagates_for_every_objective():
    model = build_model(model_config("m4"))
    x = torch.randint(0, 256, (4, 3, 92, 92), dtype=torch.uint8)
    for obj in (None, objective(name="masked"), objective(name="augment", invariance=0.5, redundancy=1.0)):
        model.zero_grad()
        loss = objective_loss(model, x, obj, torch.Generator().manual_seed(0))
        loss.backward()
        assert torch.isfinite(loss) and model.encoder[0].weight.grad.abs().sum() > 0


def test_contrastive_loss_trains_every_part_and_is_deterministic():
    model = build_model(model_config("m5"))
    x = images(8)
    loss = contrastive_loss(model, x, contrastive(), torch.Generator().manual_seed(3))
    loss.backward()
    for part in (model.encoder, model.projector, model.decoder):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters() if p.ndim > 1)
    # Without the MSE term the decoder gets no gradient: the weight is what it says.
    model.zero_grad(set_to_none=True)
    contrastive_loss(model, x, contrastive(reconstruction=0.0), torch.Generator().manual_seed(3)).backward()
    assert all(p.grad is None for p in model.decoder.parameters())
    # Validation loss draws its views from a fixed seed: the same model scores the same.
    cpu = torch.device("cpu")
    assert validation_loss(model, batches(x), 4, cpu, contrastive()) == validation_loss(model, batches(x), 4, cpu, contrastive())
