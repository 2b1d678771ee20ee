"""Hydra multirun sweeps through the CLI (`landmark-ae train -m ...`): one run dir per job, with any
launcher (basic, joblib, submitit), each job's run.json listed by `landmark-ae runs sweep=<dir>`."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, run_cli

from landmark_ae.runs import read_run_record


def listed(outputs: Path, *args: str) -> list[dict[str, str]]:
    """`landmark-ae runs <args>`, its TSV parsed (one dict per run)."""
    proc = run_cli("runs", *args, outputs=outputs)
    assert proc.returncode == 0, proc.stderr
    return list(csv.DictReader(io.StringIO(proc.stdout), delimiter="\t"))


def sweep_dirs(outputs: Path) -> list[Path]:
    return sorted((outputs / "train").iterdir())


@pytest.mark.slow
def test_multirun_sweep_trains_each_model_in_its_own_dir(tiny_prepared, tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli("train", "-m", "data=gldv2", f"data_dir={tiny_prepared}", "model=m1,m2", "epochs=1",
                   "progress=false", outputs=out)
    assert proc.returncode == 0, proc.stderr
    blocks = [line.split("\t")[1] for line in proc.stdout.splitlines() if line.startswith(("run_dir\t", "model\t"))]
    dirs, models = [Path(d) for d in blocks[0::2]], blocks[1::2]
    assert len(dirs) == 2 and dirs[0].parent == dirs[1].parent and {d.name for d in dirs} == {"0", "1"}
    assert sorted(models) == ["m1", "m2"]
    for d in dirs:
        assert (d / "best.pt").is_file() and len(pd.read_csv(d / "history.csv")) == 1


@pytest.mark.slow  # ~8 s: a real joblib sweep; the threads rule and `runs sweep=` have unit tests
def test_joblib_sweep_runs_jobs_in_parallel_with_the_cores_shared_and_runs_lists_them(tiny_prepared, tmp_path):
    import joblib

    out = tmp_path / "outputs"
    proc = run_cli("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "data=gldv2",
                   f"data_dir={tiny_prepared}", "model=m1,m2", "epochs=1", "batch_size=32", "progress=false",
                   outputs=out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # Each job's results arrive as one block, whichever job finishes first.
    lines = proc.stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("run_dir\t")]
    assert len(starts) == 2 and starts[1] - starts[0] == len(lines) - starts[1]
    [sweep] = sweep_dirs(out)
    rows = listed(out, "command=train", f"sweep={sweep}")
    assert sorted((Path(r["run_dir"]).name, r["model"], r["status"], r["epochs"]) for r in rows) == [
        ("0", "m1", "complete", "1"), ("1", "m2", "complete", "1")]
    assert all(float(r["best_val_loss"]) > 0 for r in rows)
    threads = max(joblib.cpu_count() // 2, 1)
    for job in ("0", "1"):
        assert f"torch threads: {threads} " in (sweep / job / "train.log").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"]  # nothing beside the outputs dir
    assert [p.name for p in out.iterdir()] == ["train"]  # and `runs` added no run dir of its own


@pytest.mark.slow
def test_submitit_local_sweep_writes_run_dirs_and_its_logs_under_the_sweep_dir(tiny_prepared, tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli("train", "-m", "hydra/launcher=submitit_local", "data=gldv2", f"data_dir={tiny_prepared}",
                   "model=m1,m2", "epochs=1", "batch_size=32", "progress=false", outputs=out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [sweep] = sweep_dirs(out)
    assert (sweep / ".submitit").is_dir()  # submitit's own logs stay in the sweep dir
    for job in ("0", "1"):
        assert (sweep / job / "best.pt").is_file() and (sweep / job / ".hydra" / "config.yaml").is_file()
    rows = listed(out, "command=train", f"sweep={sweep}")
    assert sorted((Path(r["run_dir"]).name, r["model"], r["status"]) for r in rows) == [
        ("0", "m1", "complete"), ("1", "m2", "complete")]
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"]


@pytest.mark.slow
def test_a_failing_job_under_joblib_is_one_line_and_leaves_no_debris(tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli("train", "-m", "hydra/launcher=joblib", "data_dir=/nonexistent", "model=m1,m2", "epochs=1",
                   outputs=out, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("landmark-ae train: error: data_dir /nonexistent does not exist")
    assert not (out / "train").exists()


def test_submitit_slurm_composes_with_its_logs_under_the_sweep_dir(tmp_path):
    proc = run_cli("train", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra",
                   outputs=tmp_path / "outputs")
    assert proc.returncode == 0, proc.stderr
    assert "partition: gpu" in proc.stdout
    assert "submitit_folder: ${hydra.sweep.dir}/.submitit/%j" in proc.stdout
    assert not (tmp_path / "outputs").exists()


# A sweep job in a process of its own, as a joblib worker runs one: it records itself running, and on
# SIGINT records itself interrupted and exits 130, as execute() does.
FAKE_JOB = r"""
import sys, time
from pathlib import Path
from landmark_ae.runs import write_run_record
run_dir = Path(sys.argv[1])
run_dir.mkdir(parents=True)
write_run_record(run_dir, "train", "running")
try:
    while True:
        time.sleep(0.05)
except KeyboardInterrupt:
    write_run_record(run_dir, "train", "interrupted", error="interrupted")
    sys.exit(130)
"""


def test_ctrl_c_of_a_sweep_stops_its_jobs_records_them_and_names_the_sweep(tmp_path, monkeypatch, capsys):
    from landmark_ae.commands import hydra_errors, sweep_interrupts

    sweep = tmp_path / "sweep"
    job = subprocess.Popen([sys.executable, "-c", FAKE_JOB, str(sweep / "0")], cwd=REPO)
    deadline = time.monotonic() + 30
    while read_run_record(sweep / "0") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # a job whose worker was killed before it could record itself: its process is gone, its record says running
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (sweep / "1").mkdir()
    (sweep / "1" / "run.json").write_text(json.dumps({"command": "train", "status": "running", "pid": int(gone.stdout),
                                                      "host": socket.gethostname()}))
    monkeypatch.setattr(sweep_interrupts, "GRACE_S", 0.0)
    monkeypatch.setattr(hydra_errors, "SWEEP_DIR", sweep)
    monkeypatch.setattr(hydra_errors, "COMMAND", "train")
    before = signal.getsignal(signal.SIGINT)
    sweep_interrupts.watch(sweep)  # as SweepDirCallback does when the sweep starts

    def launcher_waiting_for_its_jobs() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
        time.sleep(30)

    with pytest.raises(SystemExit) as exited:
        hydra_errors._report(lambda func: func(), launcher_waiting_for_its_jobs)
    assert exited.value.code == 130
    assert job.wait(timeout=10) == 130  # the job got the signal and ended on its own terms
    assert [read_run_record(sweep / j)["status"] for j in ("0", "1")] == ["interrupted", "interrupted"]
    assert capsys.readouterr().err == (
        f"landmark-ae train: interrupted; the sweep {sweep} keeps its finished work (`landmark-ae runs sweep={sweep}` "
        f"lists its jobs): continue a job with `landmark-ae train resume={sweep}/<job>`\n")
    assert signal.getsignal(signal.SIGINT) is before  # the handlers from before the sweep are back


def test_a_sweep_interrupted_before_any_job_started_leaves_nothing(tmp_path, capsys):
    from landmark_ae.commands import sweep_interrupts

    sweep = tmp_path / "train" / "sweep"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}")
    with pytest.raises(SystemExit) as exited:
        sweep_interrupts.end_sweep(sweep, "train", 143)
    assert exited.value.code == 143 and not sweep.exists()
    assert capsys.readouterr().err == ("landmark-ae train: interrupted before any job of the sweep started; nothing "
                                       "was done: start it again\n")


@pytest.mark.slow
@pytest.mark.parametrize("to_group", [True, False], ids=["ctrl-c-in-a-terminal", "sigint-to-the-launcher"])
def test_ctrl_c_of_a_joblib_sweep_exits_130_in_one_line_with_every_job_interrupted(tiny_prepared, tmp_path, to_group):
    out = tmp_path / "outputs"
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(out), "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, "-m", "landmark_ae", "train", "-m", "hydra/launcher=joblib",
                             "hydra.launcher.n_jobs=2", "data=gldv2", f"data_dir={tiny_prepared}", "model=m1,m2",
                             "epochs=200", "batch_size=32", "progress=false"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # both jobs training (an epoch done, so there is work to keep)
        if len(list(out.glob("train/*/*/history.csv"))) == 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT) if to_group else proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    [sweep] = sweep_dirs(out)
    assert stderr.strip().splitlines()[-1] == (
        f"landmark-ae train: interrupted; the sweep {sweep} keeps its finished work (`landmark-ae runs sweep={sweep}` "
        f"lists its jobs): continue a job with `landmark-ae train resume={sweep}/<job>`")
    assert [read_run_record(sweep / job)["status"] for job in ("0", "1")] == ["interrupted", "interrupted"]
