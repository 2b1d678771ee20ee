"""Run plumbing (landmark_ae/runs.py): atomic writes and their mode, run records and statuses,
which runs resume= accepts, one process per run dir, temp files of killed runs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from landmark_ae.errors import UserError
from landmark_ae.runs import (
    atomic_path,
    check_resumable,
    read_run_record,
    remove_temp_files,
    run_lock,
    run_status,
    write_bytes_atomic,
    write_run_record,
)


def make_run(path: Path, command: str = "train", status: str = "running", pid: int | None = None, **fields) -> Path:
    """A run dir whose record was written by process `pid` (default: this one)."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("epochs: 3\n")
    record = write_run_record(path, command, status, **fields)
    if pid is not None:
        (path / "run.json").write_text(json.dumps({**record, "pid": pid}))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_writes_get_the_ordinary_file_mode_and_leave_no_temp_file(tmp_path):
    write_bytes_atomic(tmp_path / "a.bin", b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o666 & ~mask  # 0644 with the usual umask
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_run_records_carry_pid_and_host_and_a_dead_running_run_reads_as_interrupted(tmp_path):
    record = write_run_record(tmp_path, "train", "running", data="gldv2")
    assert record["pid"] == os.getpid() and record["host"] and record["started"] == record["updated"]
    assert run_status(record) == "running"  # this process is alive
    assert run_status({**record, "pid": dead_pid()}) == "interrupted"
    assert run_status({**record, "status": "complete"}) == "complete"
    assert run_status({**record, "status": "failed", "pid": dead_pid()}) == "failed"
    (tmp_path / "run.json").write_text("{not json")
    assert read_run_record(tmp_path) is None


def test_resume_accepts_only_an_unfinished_run_of_the_same_command(tmp_path):
    interrupted = make_run(tmp_path / "interrupted", pid=dead_pid())
    assert check_resumable(str(interrupted), "train") == interrupted
    failed = make_run(tmp_path / "failed", status="failed", pid=dead_pid())
    assert check_resumable(str(failed), "train") == failed

    def refused(path: Path | str, command: str = "train") -> str:
        with pytest.raises(UserError) as info:
            check_resumable(str(path), command)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "no such run dir" in refused(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
    (tmp_path / "plain").mkdir()
    assert "not a landmark-ae run dir" in refused(tmp_path / "plain")
    assert "is a train run: resume it with `landmark-ae train resume=" in refused(interrupted, "prepare")
    assert "already complete" in refused(make_run(tmp_path / "done", status="complete"))
    assert f"in progress (process {os.getpid()}" in refused(make_run(tmp_path / "live"))
    damaged = make_run(tmp_path / "damaged", pid=dead_pid())
    (damaged / "run.json").write_text('{"command": "tr')
    assert "run.json is damaged" in refused(damaged)
    no_config = make_run(tmp_path / "no_config", pid=dead_pid())
    (no_config / ".hydra" / "config.yaml").unlink()
    assert "own config (.hydra/config.yaml) is missing" in refused(no_config)
    # A finished dataset with failures worth retrying (timeouts, a missing file) may be resumed.
    retry = make_run(tmp_path / "retry", command="prepare", status="complete", retryable=3)
    assert check_resumable(str(retry), "prepare") == retry
    assert "already complete" in refused(make_run(tmp_path / "final", "prepare", "complete", retryable=0), "prepare")


def test_one_process_per_run_dir(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(str(sleeper.pid))
        with pytest.raises(UserError, match=f"in use by process {sleeper.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    (tmp_path / ".lock").write_text(str(sleeper.pid))  # its process is gone: the lock is stale
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
        with pytest.raises(UserError, match=f"in use by process {os.getpid()}"):
            with run_lock(tmp_path):
                pass
    assert not (tmp_path / ".lock").exists()


def test_temp_files_of_a_killed_run_are_found_anywhere_in_it(tmp_path):
    for name in ("train/.a.jpg.x1.tmp", ".train.npy.x2.tmp", "source/images/a/b/.c.jpg.x3.tmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / "train" / "kept.jpg").write_bytes(b"whole")
    assert remove_temp_files(tmp_path) == 3
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["kept.jpg"]
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == '["source", "train"]'


def test_latest_run_skips_damaged_records_with_one_warning(tmp_path, caplog):
    from test_run_list import DAMAGED_RECORDS

    from landmark_ae.runs import Run

    out = tmp_path / "outputs"
    good = make_run(out / "train" / "2026-01-01_00-00-00-000000", status="complete")
    for n, text in enumerate(DAMAGED_RECORDS):
        damaged = make_run(out / "train" / f"2026-02-0{n + 1}_00-00-00-000000", status="complete")
        (damaged / "run.json").write_text(text)
        assert Run(damaged).status == "damaged" and read_run_record(damaged) is None
    with caplog.at_level("WARNING"):
        assert Run.latest(out, "train").path == good
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"skipped {len(DAMAGED_RECORDS)} damaged run record(s)" in warnings[0].getMessage()


def test_a_failed_lookup_says_where_it_looked_and_how_to_point_elsewhere(tmp_path, monkeypatch):
    from landmark_ae.runs import Run

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as info:
        Run.resolve(None, "outputs", "embed", "embed_run", "run `landmark-ae embed` first, or pass embed_run=<dir>")
    assert str(info.value) == (
        f"no complete embed run found under {tmp_path / 'outputs' / 'embed'}: run `landmark-ae embed` first, or pass "
        "embed_run=<dir> (runs are looked up under LANDMARK_AE_OUTPUTS or paths.output_dir=<outputs dir>)")
    assert not (tmp_path / "outputs").exists()


def test_an_empty_run_value_is_an_error_not_the_latest_run(tmp_path):
    from landmark_ae.runs import Run

    latest = make_run(tmp_path / "outputs" / "train" / "2026-02-01_00-00-00-000000", status="complete")
    assert Run.resolve(None, tmp_path / "outputs", "train", "train_run", "").path == latest
    for empty in ("", "  "):
        with pytest.raises(UserError, match=r"^train_run is empty: pass train_run=<train run dir>, or leave"):
            Run.resolve(empty, tmp_path / "outputs", "train", "train_run", "train first")
