"""M4: residual blocks, a compact linear bottleneck, the checkpoint rebuilding it alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from landmark_ae.config import config_dir
from landmark_ae.errors import UserError
from landmark_ae.model.builder import ResBlock, build_model, check_round_trip


def model_cfg(name: str) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "model" / f"{name}.yaml"))
    cfg.pop("defaults", None)
    return cfg


def test_resblock_keeps_shape_and_adds_its_input():
    block = ResBlock(8)
    x = torch.randn(2, 8, 5, 5)
    assert block(x).shape == x.shape
    for p in block.body.parameters():  # a zero body makes the block ReLU(x)
        torch.nn.init.zeros_(p)
    assert torch.equal(block.eval()(x), torch.relu(x))
    assert ResBlock(8, bottleneck=4).body[0].out_channels == 4


def test_m4_round_trips_92_and_embeds_256_values():
    cfg = model_cfg("m4")
    model = build_model(cfg)
    assert check_round_trip(model, "m4", 92) == (256,)
    x = torch.zeros(3, 3, 92, 92)
    assert model(x).shape == x.shape and model.embed(x).shape == (3, 256)
    assert any(isinstance(m, ResBlock) for m in model.encoder)


def test_resblock_in_yaml_with_a_bad_argument_is_one_line_error():
    cfg = model_cfg("m4")
    cfg["encoder"][3] = {"type": "ResBlock", "channels": 32, "width": 3}
    with pytest.raises(UserError, match="encoder layer 3 \\(ResBlock\\)"):
        build_model(cfg)


def test_m4_checkpoint_rebuilds_alone(tmp_path):
    from landmark_ae.model.checkpoints import load_checkpoint, model_from_checkpoint, save_checkpoint

    model = build_model(model_cfg("m4")).eval()
    save_checkpoint(tmp_path / "best.pt", state_dict=model.state_dict(), model_config=model_cfg("m4"), epoch=1)
    again = model_from_checkpoint(load_checkpoint(tmp_path / "best.pt")).eval()
    x = torch.randn(2, 3, 92, 92)
    with torch.no_grad():
        assert torch.allclose(again.embed(x), model.embed(x))
