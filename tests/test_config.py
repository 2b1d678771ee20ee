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
