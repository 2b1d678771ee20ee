"""The dispatcher (landmark_ae/cli.py) and the CLI's end-to-end promise for a bad config: one line on
stderr, exit code 2, no traceback, no run dir. Which messages each bad value gets is checked
in-process in test_config.py."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, one_line_error, run_cli


def test_help_lists_commands_without_importing_torch():
    code = (
        "import sys; from landmark_ae.cli import main; rc = main(['--help']);"
        "assert 'torch' not in sys.modules and 'hydra' not in sys.modules; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for name in ("prepare", "train", "embed", "evaluate", "query"):
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


def no_files(outputs) -> bool:
    return not outputs.exists() or not any(p.is_file() for p in outputs.rglob("*"))


def test_composition_error_is_one_line_exit_2_and_leaves_no_run_dir(outputs):
    # Hydra fails while composing (before any run dir exists): our hook prints one line.
    one_line_error(run_cli("train", "model=m9", "progress=false", outputs=outputs),
                   "Could not find 'model/m9'; choose one of: m1, m2, m3")
    assert no_files(outputs)


def test_range_error_is_one_line_exit_2_and_leaves_no_run_dir(outputs):
    # Composed fine, refused by validate() inside the run: the run dir Hydra made is removed again.
    one_line_error(run_cli("train", "batch_size=-4", "progress=false", outputs=outputs),
                   "batch_size=-4 is out of range: it must be >= 1")
    assert no_files(outputs)


def test_missing_required_value_is_one_line_exit_2(outputs):
    one_line_error(run_cli("prepare", "data=gldv2", "progress=false", outputs=outputs), "data.root is required")
    assert no_files(outputs)


def closed_stdout_run(*args: str, outputs) -> subprocess.CompletedProcess:
    """`landmark-ae <args>` with stdout a pipe nobody reads any more (`... | head -0`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs), "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    try:
        return subprocess.run([sys.executable, "-m", "landmark_ae", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, cwd=REPO, env=env, timeout=120)
    finally:
        os.close(write_end)


def test_a_reader_that_stops_early_is_no_error(outputs):
    # Python's own flush at exit included (the usage text is written only then): exit 141 as
    # coreutils end, no traceback, no "Exception ignored".
    for args in (["--help"], ["runs"]):
        proc = closed_stdout_run(*args, outputs=outputs)
        assert (proc.returncode, proc.stderr) == (141, ""), (args, proc.stderr)
