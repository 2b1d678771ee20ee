"""The contrastive autoencoder: NT-Xent against hand-computed values, greyscale views, M5's
projector, the one-cycle schedule's exact resume, and `experiment=contrastive` through the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import results, run_cli
from landmark_ae.train.views import augmented
from landmark_ae.model.checkpoints import load_checkpoint, model_from_checkpoint, save_checkpoint
from landmark_ae.config import ObjectiveConfig, config_dir
from landmark_ae.model.builder import build_model
from landmark_ae.train.loop import make_scheduler, train_one_epoch, validation_loss
from landmark_ae.train.objectives import contrastive_loss, nt_xent


def model_cfg(name: str) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "model" / f"{name}.yaml"))
    cfg.pop("defaults")
    return cfg


def contrastive(**kw) -> object:
    return OmegaConf.merge(OmegaConf.structured(ObjectiveConfig),
                           {"name": "contrastive", "crop_scale": 0.2, "greyscale": 0.2, **kw})


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


def test_greyscale_views():
    x = images(16, 12)
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


def test_m5_has_a_projector_that_embeddings_skip_and_seed_models_have_none():
    model = build_model(model_cfg("m5")).eval()
    x = torch.zeros(2, 3, 48, 48)
    assert model.embed(x).shape == (2, 192)
    assert model(x).shape == x.shape
    assert model.projector(model.embed(x)).shape == (2, 128)
    assert any(k.startswith("projector.") for k in model.state_dict())
    m2 = build_model(model_cfg("m2"))
    assert m2.projector is None and not any(k.startswith("projector") for k in m2.state_dict())


def test_contrastive_loss_trains_every_part_and_is_deterministic():
    model = build_model(model_cfg("m5"))
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
    assert validation_loss(model, x, 4, torch.device("cpu"), contrastive()) == validation_loss(model, x, 4, torch.device("cpu"), contrastive())


def test_one_cycle_schedule_resumes_exactly_through_a_checkpoint(tmp_path):
    x, obj, cpu = images(24), contrastive(), torch.device("cpu")

    def fresh():
        torch.manual_seed(0)
        model = build_model(model_cfg("m5"))
        opt = torch.optim.Adam(model.parameters(), lr=0.002)
        return model, opt, make_scheduler("onecycle", opt, epochs=3, batches=3), torch.Generator().manual_seed(0)

    model, opt, sched, gen = fresh()
    straight = [train_one_epoch(model, x, opt, 8, gen, cpu, objective=obj, scheduler=sched) for _ in range(3)]
    assert sched.get_last_lr()[0] < 0.05 * 0.002  # annealed to ~0 by the end of the planned steps

    model2, opt2, sched2, gen2 = fresh()
    first = train_one_epoch(model2, x, opt2, 8, gen2, cpu, objective=obj, scheduler=sched2)
    save_checkpoint(tmp_path / "last.pt", state_dict=model2.state_dict(), optimizer=opt2.state_dict(),
                    scheduler=sched2.state_dict(), generator=gen2.get_state())
    state = load_checkpoint(tmp_path / "last.pt")  # weights-only, as train's resume loads it
    model3, opt3, sched3, gen3 = fresh()
    model3.load_state_dict(state["state_dict"])
    opt3.load_state_dict(state["optimizer"])
    sched3.load_state_dict(state["scheduler"])
    gen3.set_state(state["generator"])
    rest = [train_one_epoch(model3, x, opt3, 8, gen3, cpu, objective=obj, scheduler=sched3) for _ in range(2)]
    assert [first, *rest] == straight
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model3.state_dict().values()))
    assert make_scheduler("constant", opt, 3, 3) is None
    # An optimizer without momentum gets the lr cycle alone (torch would refuse to cycle momentum).
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    plain = make_scheduler("onecycle", sgd, 1, 4)
    sgd.step()
    plain.step()
    assert 0 < sgd.param_groups[0]["lr"] <= 0.1


def test_experiment_contrastive_trains_embeds_and_guards_its_schedule(tiny_prepared, tmp_path):
    outputs = tmp_path / "outputs"
    args = ["train", "data=gldv2", f"data_dir={tiny_prepared}", "experiment=contrastive", "epochs=1",
            "batch_size=32", "progress=false"]
    proc = run_cli(*args, outputs=outputs)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(results(proc)["run_dir"])
    ckpt = load_checkpoint(run_dir / "best.pt")
    assert ckpt["model_config"]["name"] == "m5" and ckpt["objective"]["name"] == "contrastive"
    assert model_from_checkpoint(ckpt).embed(torch.zeros(1, 3, 48, 48)).shape == (1, 192)
    assert (run_dir / "reconstructions.png").read_bytes()[:4] == b"\x89PNG"

    # The schedule was planned for 1 epoch: asking a resume for more is refused, in one line.
    more = run_cli(*args[:-3], "epochs=2", "progress=false", f"resume={run_dir}", outputs=outputs)
    assert more.returncode == 2 and "Traceback" not in more.stderr
    assert "schedule ends at epoch 1" in more.stderr
    other = run_cli(*args[:-2], "batch_size=16", "progress=false", f"resume={run_dir}", outputs=outputs)
    assert other.returncode == 2 and "resume with the batch_size it started with" in other.stderr

    # The headline post-processing, then a query: a database image finds itself first (distance ~0),
    # through M5's 48 px input and the stored whitening.
    whitened = run_cli("embed", f"train_run={run_dir}", "l2=true", "pca_whiten=8", "progress=false", outputs=outputs)
    assert whitened.returncode == 0, whitened.stderr
    target = pd.read_csv(tiny_prepared / "train.csv", dtype={"id": str}).iloc[3]
    query = run_cli("query", f"image={tiny_prepared / target['path']}", "k=3",
                    f"embed_run={results(whitened)['run_dir']}", outputs=outputs)
    assert query.returncode == 0, query.stderr
    first = query.stdout.splitlines()[1].split("\t")
    assert first[2] == target["id"] and float(first[1]) < 1e-3
