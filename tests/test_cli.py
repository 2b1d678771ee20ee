"""The dispatcher and the one-line errors a user sees for bad configs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, run_cli


def test_help_lists_commands_without_importing_torch():
    code = (
        "import sys; from landmark_ae.cli import main; rc = main(['--help']);"
        "assert 'torch' not in sys.modules and 'hydra' not in sys.modules; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for name in ("prepare", "train"):
        assert f"  {name}  " in proc.stdout


def test_unknown_command_lists_commands_and_exits_2(outputs):
    proc = run_cli("frobnicate", outputs=outputs)
    assert proc.returncode == 2
    assert "unknown command 'frobnicate'" in proc.stderr
    assert "prepare" in proc.stderr and "train" in proc.stderr


def test_hydra_flags_pass_through(outputs):
    proc = run_cli("train", "model=m1", "epochs=3", "--cfg", "job", outputs=outputs)
    assert proc.returncode == 0, proc.stderr
    assert "name: m1" in proc.stdout and "epochs: 3" in proc.stdout
    assert not outputs.exists()  # printing the config runs nothing
    proc = run_cli("prepare", "--help", outputs=outputs)
    assert proc.returncode == 0 and "data" in proc.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "epochs=abc"], "could not be converted to Integer"),
        (["train", "model=m9"], "Could not find 'model/m9'; choose one of: m1, m2, m3"),
        (["train", "data=nope"], "Could not find 'data/nope'"),
        (["train", "batch_size=-4"], "batch_size=-4 is out of range: it must be >= 1"),
        (["train", "nosuchkey=1"], "Could not override 'nosuchkey'"),
        (["prepare", "data.source=ftp"], "Invalid value 'ftp'"),
        (["prepare", "data.test_fraction=2"], "data.test_fraction=2.0 is out of range"),
    ],
)
def test_bad_config_is_one_line_exit_2_no_traceback_no_run_dir(outputs, args, expected):
    proc = run_cli(*args, "progress=false", outputs=outputs)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    assert proc.stdout == ""
    leftovers = [p for p in outputs.rglob("*") if p.is_file()] if outputs.exists() else []
    assert leftovers == []


def test_missing_required_root(outputs):
    proc = run_cli("prepare", "data=gldv2", "progress=false", outputs=outputs)
    assert proc.returncode == 2
    assert "data.root is required" in proc.stderr
    assert "Traceback" not in proc.stderr
