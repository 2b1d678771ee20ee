"""`train logger=tensorboard`: event files beside history.csv, readable by TensorBoard."""

from __future__ import annotations

import pytest
from conftest import run_in_process

from landmark_ae.errors import UserError


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events, {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_logger_writes_losses_lr_speed_and_reconstructions_and_resume_appends(tiny_prepared, tmp_path):
    run_dir = tmp_path / "train"
    args = ("train", "data=gldv2", f"data_dir={tiny_prepared}", "model=m1", "batch_size=32", "progress=false",
            "logger=tensorboard")
    run_in_process(*args, "epochs=1", run_dir=run_dir)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "history.csv").is_file()  # still written
    events, scalars = _scalars(run_dir / "tensorboard")
    assert set(scalars) == {"loss/train", "loss/val", "lr", "images_per_s"}
    assert all([step for step, _ in points] == [1] for points in scalars.values()), scalars
    assert events.Tags()["images"] == ["reconstructions"]
    # Same run dir, more epochs: it resumes from last.pt and adds epoch 2 only.
    run_in_process(*args, "epochs=2", run_dir=run_dir)
    _, scalars = _scalars(run_dir / "tensorboard")
    assert [step for step, _ in scalars["loss/val"]] == [1, 2]


def test_an_unknown_logger_is_refused_naming_the_choices(tmp_path):
    with pytest.raises(UserError, match="logger=wandb: choose one of null, tensorboard"):
        run_in_process("train", "logger=wandb", run_dir=tmp_path / "train")
