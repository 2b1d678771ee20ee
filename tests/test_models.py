"""M1/M2 are layer for layer the seed's printouts; every model round-trips its input shape."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from landmark_ae.config import config_dir
from landmark_ae.errors import UserError
from landmark_ae.model.builder import build_model, check_round_trip

PRINTOUTS = Path(__file__).parent / "data" / "seed_printouts.txt"


def model_cfg(name: str) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "model" / f"{name}.yaml"))
    cfg.pop("defaults", None)
    return cfg


def seed_printouts() -> dict[str, str]:
    text = PRINTOUTS.read_text()
    blocks = re.findall(r"^(ConvAutoencoder\w*)\(\n(.*?)^\)$", text, re.S | re.M)
    return {"m1": blocks[0][1], "m2": blocks[1][1]}


def body(model: torch.nn.Module) -> str:
    # Newer torch prints BatchNorm's `bias=True`; the seed's torch did not.
    text = repr(model).replace(", bias=True, track_running_stats", ", track_running_stats")
    return text.split("\n", 1)[1].rsplit("\n", 1)[0] + "\n"


@pytest.mark.parametrize("name", ["m1", "m2"])
def test_seed_models_match_printouts_layer_for_layer(name):
    assert body(build_model(model_cfg(name))) == seed_printouts()[name]


def test_m2_decoder_has_relu_before_batchnorm8():
    decoder = build_model(model_cfg("m2")).decoder
    assert [type(m).__name__ for m in decoder[3:7]] == ["ConvTranspose2d", "ReLU", "BatchNorm2d", "ConvTranspose2d"]
    assert decoder[5].num_features == 8


@pytest.mark.parametrize(("name", "latent"), [("m1", (8, 7, 7)), ("m2", (32, 7, 7)), ("m3", (32, 11, 11))])
def test_round_trip_and_latent(name, latent):
    cfg = model_cfg(name)
    model = build_model(cfg)
    assert check_round_trip(model, name, cfg["input_size"]) == latent
    x = torch.rand(3, 3, 92, 92) * 2 - 1
    assert model(x).shape == x.shape
    assert model.embed(x).shape == (3, latent[0] * latent[1] * latent[2])


def test_seed_decoder_returns_92_for_96_input_so_input_is_92():
    cfg = model_cfg("m2")
    cfg["input_size"] = 96
    with pytest.raises(UserError, match=r"model m2: reconstruction 3x92x92 does not match input 3x96x96"):
        build_model(cfg)


def test_layers_that_do_not_fit_are_reported():
    cfg = model_cfg("m1")
    cfg["decoder"][0]["in_channels"] = 5
    with pytest.raises(UserError, match="model m1: layers do not fit together"):
        build_model(cfg)


def test_unknown_layer_type_and_bad_argument():
    cfg = model_cfg("m1")
    cfg["encoder"][0]["type"] = "Conv9d"
    with pytest.raises(UserError, match="unknown type 'Conv9d'"):
        build_model(cfg)
    cfg = model_cfg("m1")
    cfg["encoder"][0]["kernal_size"] = 3
    with pytest.raises(UserError, match=r"encoder layer 0 \(Conv2d\)"):
        build_model(cfg)
