"""Training (landmark_ae/train/loop.py): the CLI run's checkpoints, history and figures, resume after
kill -9 to the same result, determinism, the one-cycle schedule and its resume guards, the resumes
refused before anything is written (a lost last.pt, another world size), bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO, batches, model_config, results, run_cli, run_in_process, step_of
from omegaconf import OmegaConf

from landmark_ae.config import ObjectiveConfig
from landmark_ae.errors import UserError
from landmark_ae.model.builder import build_model
from landmark_ae.model.checkpoints import load_checkpoint, model_from_checkpoint, save_checkpoint
from landmark_ae.runs import check_resumable
from landmark_ae.train.loop import make_scheduler, train_one_epoch, validation_loss
from landmark_ae.train.resumable import check_train_resume

CPU = torch.device("cpu")


def images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def objective(**kw) -> object:
    return OmegaConf.merge(OmegaConf.structured(ObjectiveConfig), kw)


def test_train_writes_checkpoints_history_and_figures(tiny_train_cli, tiny_trained, tiny_prepared, tmp_path):
    # tiny_train_cli: `train data=gldv2 model=m1 epochs=2` with no data_dir, in tiny_prepared's outputs dir
    res = results(tiny_train_cli)
    assert set(res) == {"run_dir", "model", "epochs", "best_epoch", "best_val_loss", "train_images_per_s"}
    assert all("\t" in line for line in tiny_train_cli.stdout.splitlines())  # stdout: results only
    assert res["model"] == "m1" and res["epochs"] == "2"
    assert tiny_trained.parent == tiny_prepared.parent.parent / "train"
    history = pd.read_csv(tiny_trained / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "seconds", "images_per_s"]
    assert list(history["epoch"]) == [1, 2]
    assert float(res["best_val_loss"]) == pytest.approx(history["val_loss"].min(), abs=1e-6)
    assert int(res["best_epoch"]) == int(history.loc[history["val_loss"].idxmin(), "epoch"])
    for png in ("loss_curve.png", "reconstructions.png"):
        assert (tiny_trained / png).read_bytes()[:4] == b"\x89PNG"
    assert (tiny_trained / ".hydra" / "config.yaml").is_file() and (tiny_trained / "train.log").is_file()

    # best.pt alone rebuilds the model (weights-only loading, config inside)
    alone = tmp_path / "alone.pt"
    shutil.copy(tiny_trained / "best.pt", alone)
    raw = torch.load(alone, weights_only=True)
    assert raw["model_config"]["name"] == "m1" and raw["epoch"] == int(res["best_epoch"])
    # no data_dir given: the latest complete prepare run of data=gldv2 was used
    assert Path(raw["data_dir"]).resolve() == tiny_prepared.resolve()
    model = model_from_checkpoint(load_checkpoint(alone)).eval()
    x = torch.zeros(1, 3, 92, 92)
    assert model(x).shape == x.shape and model.embed(x).shape == (1, 392)


@pytest.mark.parametrize("settings", [
    ("model=m3", "batch_size=16"),  # the seed's loop: constant lr, plain reconstruction
    # one-cycle schedule, contrastive objective (M5): ~12 s, slow; the one-cycle schedule's resume is also
    # checked in process by test_one_cycle_schedule_resumes_exactly_through_a_checkpoint
    pytest.param(("experiment=contrastive", "batch_size=32"), marks=pytest.mark.slow),
], ids=["constant-reconstruct", "onecycle-contrastive"])
def test_killed_training_resumes_with_no_overrides_to_the_same_result(settings, tiny_prepared, tmp_path):
    outputs = tmp_path / "outputs"
    args = ["train", "data=gldv2", f"data_dir={tiny_prepared}", *settings, "epochs=4", "progress=false", "device=cpu"]
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs)}
    proc = subprocess.Popen([sys.executable, "-m", "landmark_ae", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline, last = time.time() + 180, None
    while time.time() < deadline and proc.poll() is None:
        found = list(outputs.glob("train/*/last.pt"))
        if found:
            last = found[0]
            break
        time.sleep(0.01)
    assert last is not None and proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = last.parent
    done_before = len(pd.read_csv(run_dir / "history.csv"))
    assert 1 <= done_before < 4

    # The run's own config is the truth: `resume=<dir>` alone, nothing else on the command line.
    shown = run_cli("train", f"resume={run_dir}", "--cfg", "job", outputs=outputs)
    assert shown.returncode == 0 and "epochs: 4" in shown.stdout, shown.stderr
    assert ("name: m3" if "model=m3" in settings else "name: m5") in shown.stdout
    resumed = run_cli("train", f"resume={run_dir}", outputs=outputs)
    assert resumed.returncode == 0, resumed.stderr
    assert results(resumed)["run_dir"] == str(run_dir) and results(resumed)["epochs"] == "4"
    straight_dir = tmp_path / "straight"
    run_in_process(*args, f"paths.output_dir={outputs}", run_dir=straight_dir)
    a = pd.read_csv(run_dir / "history.csv")
    b = pd.read_csv(straight_dir / "history.csv")
    assert list(a["epoch"]) == [1, 2, 3, 4]
    assert a[["train_loss", "val_loss"]].equals(b[["train_loss", "val_loss"]])  # bit-identical losses
    best_a, best_b = (load_checkpoint(d / "best.pt") for d in (run_dir, straight_dir))
    assert best_a["epoch"] == best_b["epoch"]
    assert all(torch.equal(x, y) for x, y in zip(best_a["state_dict"].values(), best_b["state_dict"].values(), strict=True))
    assert (run_dir / ".hydra" / "config.yaml").is_file() and list((run_dir / ".hydra").glob("resume-*"))
    assert not list(run_dir.rglob("*.tmp"))  # nothing half-written left behind
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "complete" and record["pid"] > 0 and record["host"]
    # (a finished run's resume= is refused: test_commands.py's REFUSALS)


@pytest.mark.slow
def test_training_is_deterministic_on_cpu_through_the_cli(tiny_prepared, tmp_path):
    runs = [run_cli("train", "data=gldv2", f"data_dir={tiny_prepared}", "model=m2", "epochs=1", "batch_size=32",
                    "device=cpu", "progress=false", outputs=tmp_path / "outputs") for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    a, b = (pd.read_csv(Path(results(r)["run_dir"]) / "history.csv") for r in runs)
    assert a[["train_loss", "val_loss"]].equals(b[["train_loss", "val_loss"]])


def test_train_one_epoch_is_deterministic_for_a_seed():
    """In-process twin of the slow CLI test above: same seed, same losses and weights, bit for bit."""
    x = images(40, 92)

    def run(seed: int) -> tuple[float, float, torch.Tensor]:
        torch.manual_seed(seed)
        model = build_model(model_config("m2"))
        optimizer = torch.optim.Adam(model.parameters())
        generator = torch.Generator().manual_seed(seed)
        loss = train_one_epoch(step_of(model), batches(x), optimizer, 16, generator, CPU)
        return loss, validation_loss(model, batches(x), 16, CPU), model.encoder[0].weight.detach().clone()

    a, b, c = run(0), run(0), run(1)
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert a[0] != c[0]


def test_training_with_views_is_deterministic_and_resumable_from_the_generator():
    x = images(24, 92, seed=2)
    obj = objective(name="augment", invariance=1.0)

    def run(epochs: int, state=None):
        torch.manual_seed(0)
        model = build_model(model_config("m1"))
        opt = torch.optim.Adam(model.parameters())
        gen = torch.Generator().manual_seed(0)
        if state is not None:
            model.load_state_dict(state[0])
            opt.load_state_dict(state[1])
            gen.set_state(state[2])
        losses = [train_one_epoch(step_of(model, obj), batches(x), opt, 8, gen, CPU) for _ in range(epochs)]
        return losses, (model.state_dict(), opt.state_dict(), gen.get_state())

    straight, _ = run(2)
    assert straight == run(2)[0]
    first, state = run(1)
    second, _ = run(1, state)
    assert first + second == straight


def test_one_cycle_schedule_resumes_exactly_through_a_checkpoint(tmp_path):
    x = images(24, 48)
    obj = objective(name="contrastive", crop_scale=0.2, greyscale=0.2)

    def fresh():
        torch.manual_seed(0)
        model = build_model(model_config("m5"))
        opt = torch.optim.Adam(model.parameters(), lr=0.002)
        return model, opt, make_scheduler("onecycle", opt, epochs=3, batches=3), torch.Generator().manual_seed(0)

    model, opt, sched, gen = fresh()
    straight = [train_one_epoch(step_of(model, obj), batches(x), opt, 8, gen, CPU, scheduler=sched) for _ in range(3)]
    assert sched.get_last_lr()[0] < 0.05 * 0.002  # annealed to ~0 by the end of the planned steps

    model2, opt2, sched2, gen2 = fresh()
    first = train_one_epoch(step_of(model2, obj), batches(x), opt2, 8, gen2, CPU, scheduler=sched2)
    save_checkpoint(tmp_path / "last.pt", state_dict=model2.state_dict(), optimizer=opt2.state_dict(),
                    scheduler=sched2.state_dict(), generator=gen2.get_state())
    state = load_checkpoint(tmp_path / "last.pt")  # weights-only, as train's resume loads it
    model3, opt3, sched3, gen3 = fresh()
    model3.load_state_dict(state["state_dict"])
    opt3.load_state_dict(state["optimizer"])
    sched3.load_state_dict(state["scheduler"])
    gen3.set_state(state["generator"])
    rest = [train_one_epoch(step_of(model3, obj), batches(x), opt3, 8, gen3, CPU, scheduler=sched3) for _ in range(2)]
    assert [first, *rest] == straight
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model3.state_dict().values(), strict=True))
    assert make_scheduler("constant", opt, 3, 3) is None
    # An optimizer without momentum gets the lr cycle alone (torch would refuse to cycle momentum).
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    plain = make_scheduler("onecycle", sgd, 1, 4)
    sgd.step()
    plain.step()
    assert 0 < sgd.param_groups[0]["lr"] <= 0.1


def test_contrastive_experiment_trains_m5_and_its_schedule_guards_resume(tiny_contrastive, tiny_prepared, tmp_path):
    ckpt = load_checkpoint(tiny_contrastive / "best.pt")
    assert ckpt["model_config"]["name"] == "m5" and ckpt["objective"]["name"] == "contrastive"
    assert model_from_checkpoint(ckpt).embed(torch.zeros(1, 3, 48, 48)).shape == (1, 192)
    assert (tiny_contrastive / "reconstructions.png").read_bytes()[:4] == b"\x89PNG"

    # The one-cycle schedule was planned for 1 epoch of 3 batches: the loop refuses to resume it for
    # more epochs or with another batch_size (a copy: the guards run on the run's own dir).
    run = tmp_path / "run"
    shutil.copytree(tiny_contrastive, run)
    args = ["data=gldv2", f"data_dir={tiny_prepared}", "experiment=contrastive", "progress=false", f"resume={run}"]
    with pytest.raises(UserError, match="schedule ends at epoch 1"):
        run_in_process("train", *args, "epochs=2", "batch_size=32", run_dir=run)
    with pytest.raises(UserError, match="resume with the batch_size it started with"):
        run_in_process("train", *args, "epochs=1", "batch_size=16", run_dir=run)
    assert pd.read_csv(run / "history.csv").equals(pd.read_csv(tiny_contrastive / "history.csv"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_device_cuda_without_cuda_is_a_user_error(tiny_prepared, tmp_path):
    with pytest.raises(UserError, match="device=cuda but CUDA is not available"):
        run_in_process("train", "data=gldv2", f"data_dir={tiny_prepared}", "device=cuda", "epochs=1",
                       "progress=false", run_dir=tmp_path / "run")


def test_train_bad_inputs(tmp_path, tiny_prepared):
    empty = tmp_path / "empty_outputs"

    def err(*args: str) -> str:
        with pytest.raises(UserError) as info:
            run_in_process("train", "data=gldv2", "epochs=1", "progress=false", f"paths.output_dir={empty}", *args,
                           run_dir=tmp_path / "run")
        assert "\n" not in str(info.value)
        return str(info.value)

    message = err()
    assert "no complete prepare run found" in message and "landmark-ae prepare data=gldv2" in message
    assert "does not exist" in err(f"data_dir={tmp_path / 'nope'}")
    (tmp_path / "hollow").mkdir()
    assert "holds no prepared train split" in err(f"data_dir={tmp_path / 'hollow'}")
    # resume= must name a run: checked before Hydra makes or reuses a run dir
    with pytest.raises(UserError, match="not a landmark-ae run dir"):
        check_resumable(str(tmp_path / "hollow"), "train")


# ---- resume refusals: checked before anything is written ---------------------------------------


def interrupted_copy(run: Path, dest: Path, **record) -> Path:
    """A copy of a finished train run, recorded as one that stopped (so resume= may continue it)."""
    shutil.copytree(run, dest)
    fields = json.loads((dest / "run.json").read_text())
    (dest / "run.json").write_text(json.dumps({**fields, "status": "failed", "error": "stopped", **record}))
    return dest


def snapshot(run: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(run)): p.read_bytes() if p.is_file() else None for p in sorted(run.rglob("*"))}


def refused_by_the_command(run: Path, monkeypatch, capsys) -> str:
    """`landmark-ae train resume=<run>` in-process: exit 2 and its one line on stderr."""
    from landmark_ae.commands import train as train_command

    monkeypatch.setattr(sys, "argv", ["landmark-ae", f"resume={run}"])
    with pytest.raises(SystemExit) as exit_info:
        train_command.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_resume_of_a_run_that_lost_last_pt_is_refused_before_anything_is_written(tiny_trained, tmp_path, monkeypatch,
                                                                                 capsys):
    run = interrupted_copy(tiny_trained, tmp_path / "run")
    (run / "last.pt").unlink()
    before = snapshot(run)
    err = refused_by_the_command(run, monkeypatch, capsys)
    assert "last.pt" in err and "2 finished epoch(s)" in err and "start a new run" in err, err
    assert snapshot(run) == before  # no Hydra record, no log line, best.pt and history.csv as they were
    # The loop refuses it as well (callers that skip the command), before it writes.
    with pytest.raises(UserError, match="last.pt, which resuming needs, is missing"):
        run_in_process("train", "data=gldv2", "model=m1", "progress=false", f"resume={run}", run_dir=run)
    assert snapshot(run) == before
    # A run cut short in its first epoch (best.pt written, no history row yet) restarts in place.
    (run / "history.csv").unlink()
    check_train_resume(run, 1)
    (run / "best.pt").unlink()
    check_train_resume(run, 1)


def test_resume_with_another_world_size_is_refused_naming_the_torchrun_command(tiny_trained, tmp_path, monkeypatch,
                                                                               capsys):
    run = interrupted_copy(tiny_trained, tmp_path / "run", world_size=2)  # as a 2-rank torchrun run records it
    before = snapshot(run)
    err = refused_by_the_command(run, monkeypatch, capsys)
    assert f"resume it with `torchrun --nproc-per-node=2 -m landmark_ae train resume={run}`" in err, err
    assert snapshot(run) == before  # run.json not rewritten
    with pytest.raises(UserError, match="trains on 2 rank"):
        run_in_process("train", "data=gldv2", "model=m1", "progress=false", f"resume={run}", run_dir=run)
    assert snapshot(run) == before
    # A one-process run resumed under torchrun: resume it without torchrun.
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "world_size": 1}))
    with pytest.raises(UserError, match=r"one of 2: resume it with `landmark-ae train resume=.*` \(without torchrun\)"):
        check_train_resume(run, 2)
    check_train_resume(run, 1)
