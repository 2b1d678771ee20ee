"""The command layer (landmark_ae/commands/): run lifecycle through the real CLI. resume= takes the
run's own config and refuses what it cannot continue before writing anything; failures are recorded
honestly; the machine's errors (full disk, read-only dir) are one line; nothing is left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import one_line_error, results, run_cli


def interrupted_copy(run_dir: Path, dest: Path) -> Path:
    """A copy of a finished run whose record reads as a run killed mid-way (its pid is gone)."""
    shutil.copytree(run_dir, dest)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = json.loads((dest / "run.json").read_text())
    (dest / "run.json").write_text(json.dumps({**record, "status": "running", "pid": gone.pid}))
    return dest


def failing_writes(tmp_path: Path, code: str) -> dict:
    """env for run_cli that makes the subprocess run `code` at start-up (sitecustomize), e.g. to make
    one write fail as a full or read-only disk would."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(code))
    return {"PYTHONPATH": str(hooks)}


def test_resume_refusals_write_nothing(tmp_path, tiny_trained):
    outputs = tmp_path / "outputs"
    missing = tmp_path / "nonexistent"
    one_line_error(run_cli("prepare", f"resume={missing}", outputs=outputs), "no such run dir")
    assert not missing.exists() and not outputs.exists()
    one_line_error(run_cli("prepare", f"resume={tiny_trained}", outputs=outputs),
                   f"is a train run: resume it with `landmark-ae train resume={tiny_trained}`")
    one_line_error(run_cli("evaluate", f"resume={tiny_trained}", outputs=outputs), "evaluate has no resume=")
    # a finished run: refused, not retrained in place
    one_line_error(run_cli("train", f"resume={tiny_trained}", "epochs=3", outputs=outputs), "already complete")
    # an interrupted run: a setting that changes the result is refused naming the key and both values
    run = interrupted_copy(tiny_trained, tmp_path / "interrupted")
    before = (run / "run.json").read_text()
    one_line_error(run_cli("train", f"resume={run}", "model=m2", outputs=outputs),
                   "resume: model is m1 in this run but m2 on the command line")
    one_line_error(run_cli("train", f"resume={run}", "batch_size=8", outputs=outputs),
                   "resume: batch_size is 32 in this run but 8 on the command line")
    assert (run / "run.json").read_text() == before and not list((run / ".hydra").glob("resume-*"))
    assert not outputs.exists()
    # validation failures leave no run dir, not even an empty <output>/<command>/
    one_line_error(run_cli("train", f"paths.output_dir={tmp_path / 'X'}", "epochs=0", outputs=outputs), "epochs=0")
    assert not (tmp_path / "X" / "train").exists()
    # a sweep whose jobs cannot be composed leaves no sweep dir with only multirun.yaml
    proc = run_cli("train", "-m", "model=m9,m1", "epochs=1", outputs=outputs)
    assert proc.returncode == 2 and "Could not find 'model/m9'" in proc.stderr
    assert not outputs.exists() or not list(outputs.rglob("multirun.yaml"))


def test_embed_resume_keeps_the_checkpoint_it_started_with(tmp_path, tiny_trained, tiny_contrastive):
    outputs = tmp_path / "outputs"
    shutil.copytree(tiny_trained, outputs / "train" / tiny_trained.name)
    first = run_cli("embed", "progress=false", outputs=outputs)  # train_run=null: the latest, M1
    assert first.returncode == 0, first.stderr
    run = interrupted_copy(Path(results(first)["run_dir"]), outputs / "embed" / "interrupted")
    (run / "embeddings.npy").unlink()
    # meanwhile a newer train run (M5) became the latest
    newer = outputs / "train" / "9999-newer"
    shutil.copytree(tiny_contrastive, newer)
    record = json.loads((newer / "run.json").read_text())
    (newer / "run.json").write_text(json.dumps({**record, "started": "9999-12-31T00:00:00"}))
    resumed = run_cli("embed", f"resume={run}", "progress=false", outputs=outputs)
    assert resumed.returncode == 0, resumed.stderr
    assert results(resumed)["run_dir"] == str(run) and results(resumed)["model"] == "m1"
    meta = json.loads((run / "embed.json").read_text())
    assert Path(meta["train_run"]).name == tiny_trained.name and meta["model"] == "m1"


def test_full_disk_is_one_line_the_run_is_recorded_failed_and_resume_finishes_it(tmp_path, tiny_prepared):
    outputs = tmp_path / "outputs"
    env = failing_writes(tmp_path, """
        import errno, os
        _replace = os.replace
        def replace(src, dst, *a, **k):
            if str(dst).endswith("history.csv"):
                raise OSError(errno.ENOSPC, "No space left on device", str(dst))
            return _replace(src, dst, *a, **k)
        os.replace = replace
    """)
    args = ["train", "data=gldv2", f"data_dir={tiny_prepared}", "model=m1", "epochs=2", "progress=false"]
    proc = run_cli(*args, outputs=outputs, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    run = next((outputs / "train").iterdir())
    message = (f"no space left on device while writing {run / 'history.csv'}: free some space, "
               f"then continue with resume={run}")
    assert proc.stderr.strip().splitlines()[-1] == f"landmark-ae train: error: {message}"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] == message
    assert message in (run / "train.log").read_text()
    assert not list(run.rglob("*.tmp"))
    resumed = run_cli("train", f"resume={run}", outputs=outputs)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


def test_read_only_outputs_is_one_line_naming_the_path(tmp_path, tiny_embedded, tiny_prepared):
    outputs = tmp_path / "outputs"
    env = failing_writes(tmp_path, f"""
        import errno, pathlib
        _mkdir = pathlib.Path.mkdir
        def mkdir(self, *a, **k):
            if str(self).startswith({str(outputs)!r}):
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return _mkdir(self, *a, **k)
        pathlib.Path.mkdir = mkdir
    """)
    image = next((tiny_prepared / "test").glob("*.jpg"))
    proc = run_cli("query", f"image={image}", f"embed_run={tiny_embedded}", outputs=outputs, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stdout == "", proc.stderr
    assert "read-only file system while writing" in proc.stderr and str(outputs) in proc.stderr
    assert "LANDMARK_AE_OUTPUTS=<dir>" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_typos_get_a_suggestion_and_help_fits_the_command(tmp_path):
    proc = run_cli("trian", outputs=tmp_path)
    assert proc.returncode == 2 and "unknown command 'trian'; did you mean 'train'?" in proc.stderr
    one_line_error(run_cli("train", "+epoch=3", outputs=tmp_path), "train has no key 'epoch'; did you mean 'epochs'?")
    shown = run_cli("query", "--help", outputs=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith("landmark-ae query [key=value ...]: rank")
    assert "epochs" not in shown.stdout and "model=" not in shown.stdout and "_schema" not in shown.stdout
    shown = run_cli("train", "--help", outputs=tmp_path)
    assert "Config groups: data=gldv2|gldv2_http|gldv2_tar|landmarks10|synthetic; model=m1|" in shown.stdout
    assert not tmp_path.joinpath("train").exists()
