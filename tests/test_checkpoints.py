"""Checkpoints (landmark_ae/model/checkpoints.py): a checkpoint alone rebuilds its model, weights that
do not fit their architecture and checkpoints carrying code are refused in one line."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import model_config

from landmark_ae.errors import UserError
from landmark_ae.model.builder import build_model
from landmark_ae.model.checkpoints import CHECKPOINT_FORMAT, load_checkpoint, model_from_checkpoint, save_checkpoint


def test_m4_checkpoint_rebuilds_alone(tmp_path):
    model = build_model(model_config("m4")).eval()
    save_checkpoint(tmp_path / "best.pt", state_dict=model.state_dict(), model_config=model_config("m4"), epoch=1)
    again = model_from_checkpoint(load_checkpoint(tmp_path / "best.pt")).eval()
    x = torch.randn(2, 3, 92, 92)
    with torch.no_grad():
        assert torch.allclose(again.embed(x), model.embed(x))


def test_checkpoint_that_does_not_fit_its_architecture(tiny_trained):
    ckpt = load_checkpoint(tiny_trained / "best.pt")
    widened = [dict(layer, out_channels=12) if layer["type"] == "Conv2d" and layer["out_channels"] == 8 else layer
               for layer in ckpt["model_config"]["encoder"]]
    bad = dict(ckpt, model_config={**ckpt["model_config"], "name": "m2-ish", "encoder": widened})
    with pytest.raises(UserError, match="model m2-ish") as info:
        model_from_checkpoint(bad)
    assert "\n" not in str(info.value)


class Evil:
    """A pickle whose loading runs a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_missing_and_malicious_checkpoints_are_refused_not_executed(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    marker = tmp_path / "pwned"
    evil = tmp_path / "best.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "payload": Evil(f"touch {marker}")}, evil)
    with pytest.raises(UserError, match="is not a loadable landmark-ae checkpoint.*weights-only"):
        load_checkpoint(evil)
    assert not marker.exists()
    # proof that the pickle is live: unsafe loading does run it
    torch.load(evil, weights_only=False)
    assert marker.exists()
    # a plain dict of tensors is loadable but is not ours
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="is not a landmark-ae checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_a_format_1_checkpoint_is_upgraded_in_one_place(tmp_path):
    """Runs from before objectives, schedules and channels-last: read as the seed's training was."""
    model = build_model(model_config("m1"))
    torch.save({"format": "landmark-ae/checkpoint/1", "state_dict": model.state_dict(), "model_config": model_config("m1"),
                "epoch": 3, "optimizer": {}, "history": [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]}, tmp_path / "last.pt")
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["data"] == "unknown" and ckpt["channels_last"] is False
    assert ckpt["objective"]["name"] == "reconstruct" and ckpt["scheduler"] is None
    assert ckpt["schedule"] == {"name": "constant", "epochs": 3, "batches": 0}
