"""Every config group composes; schemas reject wrong types at compose time."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import landmark_ae.commands  # noqa: F401  (registers schemas and resolvers)
from landmark_ae.config import PrepareConfig, TrainConfig, config_dir, validate
from landmark_ae.errors import UserError

DATA = ["synthetic", "gldv2", "landmarks10"]
MODELS = ["m1", "m2", "m3"]


def _compose(name: str, overrides: list[str] = ()):
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        return compose(config_name=name, overrides=list(overrides))


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_train_composes_every_data_and_model(data, model):
    cfg = _compose("train", [f"data={data}", f"model={model}"])
    assert cfg.model.name == model and cfg.data.name == data
    assert cfg.model.input_size == 92
    assert cfg.epochs == 20 and cfg.optimizer._target_ == "torch.optim.Adam"
    validate(cfg, TrainConfig)


@pytest.mark.parametrize("data", DATA)
def test_prepare_composes_every_data(data):
    cfg = _compose("prepare", [f"data={data}"])
    validate(cfg, PrepareConfig)
    assert cfg.data.image_size == 96
    if data == "synthetic":
        assert cfg.data.source == "synthetic"
    else:
        assert OmegaConf.is_missing(cfg.data, "root")  # required: the user points it at their files


def test_seed_protocol_defaults():
    d = _compose("prepare", ["data=gldv2"]).data
    assert (d.landmark_min, d.landmark_max, d.test_fraction, d.val_fraction, d.image_size) == (1000, 2000, 0.01, 0.2, 96)
    assert (_compose("prepare", ["data=landmarks10"]).data.landmark_max) == 10


@pytest.mark.parametrize("override", ["epochs=abc", "batch_size=1.5", "data.image_size=big", "data.source=ftp", "model=m9"])
def test_wrong_values_fail_at_compose_time(override):
    with pytest.raises(ConfigCompositionException):
        _compose("train", [override])


@pytest.mark.parametrize("override", ["batch_size=-1", "epochs=0", "data.val_fraction=1.5", "data.synthetic.n_landmarks=1"])
def test_ranges_are_validated(override):
    cfg = _compose("train", [override])
    with pytest.raises(UserError, match="out of range"):
        validate(cfg, TrainConfig)


def test_experiment_preset_sets_model_objective_and_schedule_and_yields_to_the_command_line():
    cfg = _compose("train", ["experiment=contrastive"])
    validate(cfg, TrainConfig)
    assert cfg.model.name == "m5" and cfg.model.input_size == 48 and len(cfg.model.projector) == 4
    assert cfg.objective.name == "contrastive" and cfg.lr_schedule == "onecycle" and cfg.batch_size == 256
    assert cfg.optimizer.lr == 0.002
    # The preset is the base; the command line still overrides anything in it.
    cfg = _compose("train", ["experiment=contrastive", "epochs=3", "objective.temperature=0.5", "model=m4"])
    assert (cfg.epochs, cfg.objective.temperature, cfg.model.name) == (3, 0.5, "m4")
    # No preset: the seed's recipe.
    plain = _compose("train")
    assert plain.objective.name == "reconstruct" and plain.lr_schedule == "constant" and not plain.model.projector


def test_new_training_settings_are_checked():
    with pytest.raises(ConfigCompositionException):
        _compose("train", ["lr_schedule=cosine"])  # not one of constant|onecycle
    for override in ("objective.temperature=0", "objective.greyscale=2", "objective.reconstruction=-1"):
        with pytest.raises(UserError, match="out of range"):
            validate(_compose("train", [override]), TrainConfig)
