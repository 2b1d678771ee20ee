"""The training losses (landmark_ae/train/objectives.py): the objective registry, each loss against
hand-computed values (NT-Xent, the reconstruction MSE, the view-disagreement and redundancy terms) or
as the sum of its terms, every objective backpropagating."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import batches, model_config
from omegaconf import OmegaConf

from landmark_ae.config import ObjectiveConfig, ObjectiveName
from landmark_ae.data.prepared import to_model_range
from landmark_ae.model.builder import build_model
from landmark_ae.train.loop import validation_loss
from landmark_ae.train.objectives import (
    LOSS_COLUMNS,
    OBJECTIVES,
    contrastive_loss,
    cross_redundancy,
    multi_crop_loss,
    neighbour_nt_xent,
    nt_xent,
    objective_for,
    objective_loss,
    reconstruction_sum,
    view_disagreement,
)
from landmark_ae.train.views import augmented, masked, noisy


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


def zeros(x: torch.Tensor) -> torch.Tensor:
    """A 'model' that rebuilds every image as mid-grey (0 in model range)."""
    return torch.zeros_like(x)


def test_every_objective_name_is_registered_with_its_loss_names():
    assert set(OBJECTIVES) == {name.value for name in ObjectiveName}
    assert objective_for(None) is OBJECTIVES["reconstruct"] is objective_for(objective(name="reconstruct"))
    assert all(o.loss_names == LOSS_COLUMNS == ("train_loss", "val_loss") for o in OBJECTIVES.values())
    assert {n: o.loss_label for n, o in OBJECTIVES.items() if o.loss_label != "MSE"} == {"contrastive": "NT-Xent + MSE"}
    with pytest.raises(ValueError, match="unknown objective 'jigsaw'"):
        objective_for(OmegaConf.create({"name": "jigsaw"}))


def test_each_objective_takes_its_own_view():
    x, seed = images(4, 16), 5
    expected = {
        "reconstruct": x,
        "denoise": noisy(x, torch.Generator().manual_seed(seed), 0.2),
        "augment": augmented(x, torch.Generator().manual_seed(seed)),
        "masked": masked(x, torch.Generator().manual_seed(seed)),
        "contrastive": augmented(x, torch.Generator().manual_seed(seed), crop_scale=0.2, greyscale=0.2),
    }
    for name, view in expected.items():
        settings = contrastive() if name == "contrastive" else objective(name=name)
        assert torch.equal(OBJECTIVES[name].views(x, settings, torch.Generator().manual_seed(seed)), view), name


def test_reconstruction_losses_match_hand_computed_values():
    # Two 3-pixel images, 1.0 and 0.5 everywhere, rebuilt as 0: per-image MSEs 1 and 0.25, summed 1.25.
    x = torch.tensor([1.0, 0.5]).view(2, 1, 1, 1).expand(2, 3, 1, 1)
    total = reconstruction_sum(zeros, x)
    assert total.dtype == torch.float64 and total.item() == 1.25
    # The seed's training loss: the mean MSE of the clean image (255 and 0 are +1 and -1 in model range).
    clean = torch.tensor([255, 0], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2).contiguous()
    assert OBJECTIVES["reconstruct"].train_loss(zeros, clean, None, torch.Generator()).item() == 1.0
    assert objective_loss(zeros, clean, None, torch.Generator()).item() == 1.0


def test_invariance_loss_is_the_two_views_mse_plus_its_weighted_terms():
    torch.manual_seed(0)
    model = build_model(model_config("m1"))
    x, settings = images(6, 92), objective(name="denoise", invariance=0.5, redundancy=2.0)
    loss = objective_loss(model, x, settings, torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(4)
    views = torch.cat([noisy(x, gen, settings.noise_std), noisy(x, gen, settings.noise_std)])
    latent = model.encoder(to_model_range(views))
    a, b = latent.flatten(1).chunk(2)
    mse = torch.nn.functional.mse_loss(model.decoder(latent), torch.cat([to_model_range(x)] * 2))
    assert loss.item() == pytest.approx((mse + 0.5 * view_disagreement(a, b) + 2.0 * cross_redundancy(a, b)).item(), rel=1e-6)


def test_contrastive_loss_is_nt_xent_plus_weighted_view_mse():
    torch.manual_seed(0)
    model = build_model(model_config("m5"))
    x, settings = images(4), contrastive(reconstruction=0.5, temperature=0.3)
    loss = contrastive_loss(model, x, settings, torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(2)
    views = to_model_range(torch.cat([augmented(x, gen, 0.2, greyscale=0.2), augmented(x, gen, 0.2, greyscale=0.2)]))
    latent = model.encoder(views)
    expected = nt_xent(model.projector(latent.flatten(1)), 0.3) + 0.5 * torch.nn.functional.mse_loss(model.decoder(latent), views)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_views_cut_from_the_source_size_are_resampled_to_the_model_input():
    torch.manual_seed(0)
    model = build_model(model_config("m5"))
    big, settings = images(4, size=96), contrastive(source_size=96, temperature=0.3)
    loss = contrastive_loss(model, big, settings, torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(2)
    views = to_model_range(torch.cat([augmented(big, gen, 0.2, greyscale=0.2, size=48),
                                      augmented(big, gen, 0.2, greyscale=0.2, size=48)]))
    assert views.shape[-1] == 48
    latent = model.encoder(views)
    expected = nt_xent(model.projector(latent.flatten(1)), 0.3) + torch.nn.functional.mse_loss(model.decoder(latent), views)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_multi_crop_loss_averages_the_global_pair_with_each_local_against_both_globals():
    g = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))  # 3 images, two global views
    local = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))  # two local views of each
    first, second = g.chunk(2)
    pairs = [nt_xent(torch.cat([lv, gv]), 0.5) for lv in local.chunk(2) for gv in (first, second)]
    expected = (nt_xent(g, 0.5) + sum(pairs) / 2) / 3  # one global pair + two locals, each weighing one pair
    assert multi_crop_loss(g, local, 0.5).item() == pytest.approx(expected.item(), rel=1e-6)
    # Local views identical to their image's global views: they find their partners as the globals do.
    assert multi_crop_loss(g, torch.cat([first, first]), 0.5).item() < multi_crop_loss(g, local, 0.5).item()


def test_local_crops_add_small_views_and_leave_the_global_sequence_alone():
    torch.manual_seed(0)
    model = build_model(model_config("m5"))
    x = images(4)
    plain = contrastive(reconstruction=0.0)
    multi = contrastive(reconstruction=0.0, local_crops=2, local_size=24)
    # The global views come first from the generator, so both runs see the same two global views.
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    contrastive_loss(model, x, plain, gen_a)
    loss = contrastive_loss(model, x, multi, gen_b)
    assert not torch.equal(gen_a.get_state(), gen_b.get_state())  # the local views drew more
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_neighbour_nt_xent_matches_hand_computed_values():
    # Two images, views a = (e1, e2) and b = (e2, e1): each image's nearest other image is the other
    # one, whose view matches this image's other view: logits (1/t, 0), the neighbour's first.
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    z = torch.stack([e1, e2, e2, e1])
    assert neighbour_nt_xent(z, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    assert neighbour_nt_xent(z, 0.5).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    # Views that agree with their own image (b = a) disagree with the neighbour's: (0, 1/t).
    assert neighbour_nt_xent(torch.stack([e1, e2, e1, e2]), 1.0).item() == pytest.approx(math.log(1 + math.e), rel=1e-6)
    # Three images: the neighbour is the nearest other one (row 1 for row 0, not the orthogonal row 2).
    near = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    z = torch.cat([near, near]).requires_grad_()
    loss = neighbour_nt_xent(z, 1.0)
    unit = torch.nn.functional.normalize(near, dim=1)
    logits = unit[[1, 0, 1]] @ unit.T  # neighbours of rows 0, 1, 2: rows 1, 0, 1
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.arange(3)).item(), rel=1e-6)
    loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        neighbour_nt_xent(torch.ones(2, 2), 1.0)


def test_neighbours_weight_mixes_the_two_losses():
    torch.manual_seed(0)
    model = build_model(model_config("m5"))
    x = images(6)
    losses = {w: contrastive_loss(model, x, contrastive(reconstruction=0.0, neighbours=w),
                                  torch.Generator().manual_seed(3)) for w in (0.0, 0.5, 1.0)}
    assert losses[0.5].item() == pytest.approx((losses[0.0].item() + losses[1.0].item()) / 2, rel=1e-5)
    assert losses[1.0].item() != pytest.approx(losses[0.0].item(), rel=1e-3)


def test_validation_asks_the_objective_reconstructive_ones_score_the_clean_images():
    torch.manual_seed(0)
    model = build_model(model_config("m1"))
    x, cpu = images(10, 92), torch.device("cpu")
    seed_loss = validation_loss(model, batches(x), 4, cpu)
    with torch.no_grad():
        assert seed_loss == pytest.approx(reconstruction_sum(model.eval(), to_model_range(x)).item() / len(x), rel=1e-9)
    for name in ("reconstruct", "denoise", "augment", "masked"):  # the view is for training only
        assert validation_loss(model, batches(x), 4, cpu, objective(name=name, invariance=1.0)) == seed_loss
