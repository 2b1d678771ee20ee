"""Hydra multirun sweeps through the CLI (`landmark-ae train -m ...`): one run dir per job, with any
launcher (basic, joblib, submitit), each job's run.json listed by `landmark-ae runs sweep=<dir>`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli


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
