"""Models from YAML (landmark_ae/model/builder.py): M1/M2 are layer for layer the seed's printouts,
every model round-trips its input shape, M4's residual blocks, M5's projector, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import model_config

from landmark_ae.errors import UserError
from landmark_ae.model.builder import ResBlock, build_model, check_round_trip

PRINTOUTS = Path(__file__).parent / "data" / "seed_printouts.txt"


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
    assert body(build_model(model_config(name))) == seed_printouts()[name]


# Counted by hand from the printouts: a (transposed) conv holds in * out * k * k weights and out
# biases, a BatchNorm2d(c) 2c. M1: 448 + 1160 | 1168 + 3208 + 867; M2: 1792 + 128 + 18464 + 64 |
# 4624 + 32 + 3208 + 16 + 867. The sides follow from kernel, stride and padding: a conv gives
# (n + 2p - k) // s + 1, a max-pool (n - k) // s + 1, a transposed conv (n - 1) * s - 2p + k.
SEED_PARAMETERS = {"m1": (1608, 5243), "m2": (20448, 8747)}
SEED_SIDES = {"encoder": [31, 15, 8, 7], "decoder": [15, 45, 92]}


@pytest.mark.parametrize("name", ["m1", "m2"])
def test_seed_models_have_their_printed_layers_parameters_and_sides(name):
    model = build_model(model_config(name))
    counts = tuple(sum(p.numel() for p in part.parameters()) for part in (model.encoder, model.decoder))
    assert counts == SEED_PARAMETERS[name]
    x = torch.zeros(1, 3, 92, 92)
    for part in ("encoder", "decoder"):
        sides = []
        for layer in getattr(model, part):
            x = layer(x)
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.MaxPool2d)):
                sides.append(x.shape[-1])
        assert sides == SEED_SIDES[part]


@pytest.mark.parametrize(("name", "latent"), [("m1", (8, 7, 7)), ("m2", (32, 7, 7)), ("m3", (32, 11, 11))])
def test_round_trip_and_latent(name, latent):
    cfg = model_config(name)
    model = build_model(cfg)
    assert check_round_trip(model, name, cfg["input_size"]) == latent
    x = torch.rand(3, 3, 92, 92) * 2 - 1
    assert model(x).shape == x.shape
    assert model.embed(x).shape == (3, latent[0] * latent[1] * latent[2])


def test_seed_decoder_returns_92_for_96_input_so_input_is_92():
    cfg = model_config("m2")
    cfg["input_size"] = 96
    with pytest.raises(UserError, match=r"model m2: reconstruction 3x92x92 does not match input 3x96x96"):
        build_model(cfg)


def test_layers_that_do_not_fit_are_reported():
    cfg = model_config("m1")
    cfg["decoder"][0]["in_channels"] = 5
    with pytest.raises(UserError, match="model m1: layers do not fit together"):
        build_model(cfg)


def test_unknown_layer_type_and_bad_argument():
    cfg = model_config("m1")
    cfg["encoder"][0]["type"] = "Conv9d"
    with pytest.raises(UserError, match="unknown type 'Conv9d'"):
        build_model(cfg)
    cfg = model_config("m1")
    cfg["encoder"][0]["kernal_size"] = 3
    with pytest.raises(UserError, match=r"encoder layer 0 \(Conv2d\)"):
        build_model(cfg)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("groups", 2, "in_channels must be divisible by groups"),  # torch raises ValueError for these
    ("padding_mode", "bogus", "padding_mode must be one of"),
])
def test_out_of_range_layer_arguments_name_the_layer(key, value, expected):
    cfg = model_config("m1")
    cfg["encoder"][0][key] = value
    with pytest.raises(UserError, match=rf"model m1: encoder layer 0 \(Conv2d\): {expected}"):
        build_model(cfg)


# ---- M4: residual blocks, a compact linear bottleneck ----------------------------------------


def test_resblock_keeps_shape_and_adds_its_input():
    block = ResBlock(8)
    x = torch.randn(2, 8, 5, 5)
    assert block(x).shape == x.shape
    for p in block.body.parameters():  # a zero body makes the block ReLU(x)
        torch.nn.init.zeros_(p)
    assert torch.equal(block.eval()(x), torch.relu(x))
    assert ResBlock(8, bottleneck=4).body[0].out_channels == 4


def test_m4_round_trips_92_and_embeds_256_values():
    model = build_model(model_config("m4"))
    assert check_round_trip(model, "m4", 92) == (256,)
    x = torch.zeros(3, 3, 92, 92)
    assert model(x).shape == x.shape and model.embed(x).shape == (3, 256)
    assert any(isinstance(m, ResBlock) for m in model.encoder)


def test_resblock_in_yaml_with_a_bad_argument_is_one_line_error():
    cfg = model_config("m4")
    cfg["encoder"][3] = {"type": "ResBlock", "channels": 32, "width": 3}
    with pytest.raises(UserError, match="encoder layer 3 \\(ResBlock\\)"):
        build_model(cfg)


# ---- M5: a projector that embeddings skip ----------------------------------------------------


def test_m5_has_a_projector_that_embeddings_skip_and_seed_models_have_none():
    model = build_model(model_config("m5")).eval()
    x = torch.zeros(2, 3, 48, 48)
    assert model.embed(x).shape == (2, 192)
    assert model(x).shape == x.shape
    assert model.projector(model.embed(x)).shape == (2, 128)
    assert any(k.startswith("projector.") for k in model.state_dict())
    m2 = build_model(model_config("m2"))
    assert m2.projector is None and not any(k.startswith("projector") for k in m2.state_dict())
