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

import pytest
from conftest import REPO, execute_in_process, one_line_error, results, run_cli

from landmark_ae.runs import Run, write_run_record


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


def full_disk_on(name: str) -> str:
    """failing_writes code: the atomic replace onto a file named `name` fails as on a full disk."""
    return f"""
        import errno, os
        _replace = os.replace
        def replace(src, dst, *a, **k):
            if str(dst).endswith({name!r}):
                raise OSError(errno.ENOSPC, "No space left on device", str(dst))
            return _replace(src, dst, *a, **k)
        os.replace = replace
    """


# (what is refused, the command line ({trained}: tiny_trained; {interrupted}: an interrupted copy of it;
# {missing}: a path that does not exist; {other}: another outputs dir), the one line's text)
REFUSALS = [
    ("no such dir", ["prepare", "resume={missing}"], "no such run dir"),
    ("another command's run", ["prepare", "resume={trained}"],
     "is a train run: resume it with `landmark-ae train resume={trained}`"),
    ("a command without resume", ["evaluate", "resume={trained}"], "evaluate has no resume="),
    ("a finished run, not retrained in place", ["train", "resume={trained}", "epochs=3"], "already complete"),
    ("a config group changed", ["train", "resume={interrupted}", "model=m2"],
     "resume: model is m1 in this run but m2 on the command line"),
    ("a key that changes the result", ["train", "resume={interrupted}", "batch_size=8"],
     "resume: batch_size is 32 in this run but 8 on the command line"),
    ("a value out of range", ["train", "paths.output_dir={other}", "epochs=0"], "epochs=0"),
]


@pytest.mark.parametrize(("args", "expected"), [case[1:] for case in REFUSALS], ids=[case[0] for case in REFUSALS])
def test_resume_refusals_write_nothing(tmp_path, tiny_trained, args, expected):
    outputs, missing, other = tmp_path / "outputs", tmp_path / "nonexistent", tmp_path / "X"
    run = interrupted_copy(tiny_trained, tmp_path / "interrupted")
    before = (run / "run.json").read_text()
    names = {"trained": tiny_trained, "interrupted": run, "missing": missing, "other": other}
    one_line_error(run_cli(*(a.format(**names) for a in args), outputs=outputs), expected.format(**names))
    assert not missing.exists() and not outputs.exists()
    assert (run / "run.json").read_text() == before and not list((run / ".hydra").glob("resume-*"))
    assert not other.exists()  # no run dir, not even an empty <output>/<command>/ or outputs dir


def test_a_sweep_that_cannot_be_composed_leaves_no_sweep_dir(tmp_path):
    outputs = tmp_path / "outputs"
    proc = run_cli("train", "-m", "model=m9,m1", "epochs=1", outputs=outputs)
    assert proc.returncode == 2 and "Could not find 'model/m9'" in proc.stderr
    assert not outputs.exists() or not list(outputs.rglob("multirun.yaml"))


# (command, the file whose write fails: prepare's last array, after every image; train's history.csv)
FULL_DISK = [("prepare", "test.npy"), pytest.param("train", "history.csv", marks=pytest.mark.slow)]  # train: 2 trainings


@pytest.mark.parametrize(("command", "failing"), FULL_DISK, ids=["prepare", "train"])
def test_full_disk_is_one_line_the_run_is_recorded_failed_and_resume_keeps_its_work(command, failing, tmp_path,
                                                                                    request):
    outputs = tmp_path / "outputs"
    args = (["prepare", "data=gldv2", f"data.root={request.getfixturevalue('tiny_source')}"] if command == "prepare" else
            ["train", "data=gldv2", f"data_dir={request.getfixturevalue('tiny_prepared')}", "model=m1", "epochs=2"])
    proc = run_cli(*args, "progress=false", outputs=outputs, env=failing_writes(tmp_path, full_disk_on(failing)))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stdout == "", proc.stderr
    run = next((outputs / command).iterdir())
    message = f"no space left on device while writing {run / failing}: free some space, then continue with resume={run}"
    assert proc.stderr.strip().splitlines()[-1] == f"landmark-ae {command}: error: {message}"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] == message and message in (run / f"{command}.log").read_text()
    assert not list(run.rglob("*.tmp")) and not (run / failing).exists()
    kept = {path: path.stat().st_mtime_ns for path in run.glob("*/*.jpg")}  # prepare's images
    resumed = run_cli(command, f"resume={run}", "progress=false", outputs=outputs)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "complete" and (run / failing).is_file()
    if command == "prepare":  # every image was written before the disk filled: none is written again
        assert len(kept) == 120 and {path: path.stat().st_mtime_ns for path in run.glob("*/*.jpg")} == kept


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
    data = "|".join(sorted(path.stem for path in (REPO / "conf" / "data").glob("*.yaml")))  # every data= option
    assert f"Config groups: data={data}; model=m1|" in shown.stdout and "gldv2|gldv2_http|gldv2_tar" in data
    assert not tmp_path.joinpath("train").exists()


# ---- how a run that does not complete is left ------------------------------------------------


def test_an_interrupted_embed_keeps_its_dir_and_resumes_with_the_checkpoint_it_started_with(tmp_path, tiny_trained,
                                                                                              tiny_contrastive):
    """Ctrl-C once embed has chosen its checkpoint (run.json's train_run: here the latest train run, M1),
    before any file is written: the dir is kept, the line says how to continue (not as an error), and
    resume= finishes it with that checkpoint, though a newer train run (M5) is the latest by then."""
    outputs = tmp_path / "outputs"
    shutil.copytree(tiny_trained, outputs / "train" / tiny_trained.name)
    env = failing_writes(tmp_path, """
        import os, signal
        import landmark_ae.runs as runs
        _write = runs.write_run_record
        def write_run_record(run_dir, command, status, **fields):
            record = _write(run_dir, command, status, **fields)
            if (command, status) == ("embed", "running"):
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would, once the run has started
            return record
        runs.write_run_record = write_run_record
    """)
    proc = run_cli("embed", "progress=false", outputs=outputs, env=env)  # train_run=null: the latest, M1
    run = next((outputs / "embed").iterdir())
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"landmark-ae embed: interrupted; finished work is kept: continue with resume={run}")
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    newer = outputs / "train" / "9999-newer"  # meanwhile a newer train run (M5) became the latest
    shutil.copytree(tiny_contrastive, newer)
    record = json.loads((newer / "run.json").read_text())
    (newer / "run.json").write_text(json.dumps({**record, "started": "9999-12-31T00:00:00"}))
    resumed = run_cli("embed", f"resume={run}", "progress=false", outputs=outputs)
    assert resumed.returncode == 0, resumed.stderr
    assert results(resumed)["run_dir"] == str(run) and results(resumed)["model"] == "m1"
    meta = json.loads((run / "embed.json").read_text())
    assert Path(meta["train_run"]).name == tiny_trained.name and meta["model"] == "m1"


def _record_start_then(raised: BaseException):
    """A stage body that records what it started from (as embed does), then raises `raised`."""

    def body(cfg, run_dir):
        write_run_record(run_dir, "embed", "running", train_run=str(run_dir.parent / "train"))
        raise raised

    return body


def test_an_interrupted_run_that_did_no_work_is_removed_and_says_start_again(tmp_path, capsys):
    run_dir = tmp_path / "outputs" / "embed" / "stamp"

    def body(cfg, run_dir):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as info:
        execute_in_process("embed", body, run_dir=run_dir)
    assert info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "landmark-ae embed: interrupted before any work was done; nothing was kept: start again")
    assert not (tmp_path / "outputs" / "embed").exists()  # the empty <outputs>/embed/ goes too


def test_a_terminated_run_with_work_is_kept_interrupted_and_resumable(tmp_path, capsys):
    from landmark_ae.commands import Terminated

    run_dir = tmp_path / "outputs" / "embed" / "stamp"
    with pytest.raises(SystemExit) as info:
        execute_in_process("embed", _record_start_then(Terminated()), run_dir=run_dir)
    assert info.value.code == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"landmark-ae embed: interrupted; finished work is kept: continue with resume={run_dir}")
    assert Run(run_dir).status == "interrupted"


def test_a_bug_is_recorded_failed_and_keeps_its_traceback(tmp_path):
    run_dir = tmp_path / "outputs" / "embed" / "stamp"
    with pytest.raises(RuntimeError, match="boom"):
        execute_in_process("embed", _record_start_then(RuntimeError("boom\nmore detail")), run_dir=run_dir)
    record = Run(run_dir).record
    assert (record["status"], record["error"]) == ("failed", "RuntimeError: boom")
    assert not (run_dir / ".lock").exists()


def test_a_run_whose_reader_closed_stdout_is_recorded_interrupted_and_exits_quietly(tmp_path):
    from landmark_ae.output import StdoutClosed

    run_dir = tmp_path / "outputs" / "embed" / "stamp"
    with pytest.raises(StdoutClosed):  # cli.py turns it into exit 141, no message
        execute_in_process("embed", _record_start_then(StdoutClosed()), run_dir=run_dir)
    record = Run(run_dir).record
    assert record["status"] == "interrupted" and "closed stdout" in record["error"]
    assert not (run_dir / ".lock").exists()


@pytest.mark.parametrize("where", ["env", "override"])
def test_an_outputs_dir_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys, where):
    from landmark_ae.commands import launch

    afile = tmp_path / "outputs"
    afile.write_text("not a folder")
    if where == "env":
        monkeypatch.setenv("LANDMARK_AE_OUTPUTS", str(afile))
        argv, named, problem = ["epochs=1"], f"LANDMARK_AE_OUTPUTS={afile}", "is a file"
    else:
        argv = [f"paths.output_dir={afile}/runs"]
        named, problem = f"paths.output_dir={afile}/runs", f"lies under {afile}, which is a file"
    monkeypatch.setattr(sys, "argv", ["landmark-ae", *argv])
    with pytest.raises(SystemExit) as info:
        launch("train", lambda: pytest.fail("Hydra must not start"))
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"landmark-ae train: error: {named}: the outputs dir {problem}, not a folder: point LANDMARK_AE_OUTPUTS or "
        "paths.output_dir at a folder (it is created if missing)\n")


def test_a_lookup_from_an_empty_folder_says_where_it_looked_and_leaves_nothing(tmp_path):
    outputs = tmp_path / "fresh" / "outputs"
    proc = run_cli("query", "image=a.jpg", outputs=outputs)
    one_line_error(proc, f"no complete embed run found under {outputs / 'embed'}:", "embed_run=<embed run dir>",
                   "LANDMARK_AE_OUTPUTS or paths.output_dir")
    assert not (tmp_path / "fresh").exists()  # no empty outputs/ (or its parent) left behind


# ---- torchrun ----------------------------------------------------------------------------------


def test_torchrun_ranks_share_a_run_dir_and_only_rank_0_records_it(tmp_path, monkeypatch, capsys):
    from landmark_ae.commands import launch

    def launched(command: str, *argv: str) -> list[str]:
        """The command line `launch` hands Hydra, or (a refusal) the error line."""
        seen: list[list[str]] = []
        monkeypatch.setattr(sys, "argv", ["landmark-ae", *argv])
        try:
            launch(command, lambda: seen.append(sys.argv[1:]))
        except SystemExit:
            return [capsys.readouterr().err.strip()]
        return seen[0]

    monkeypatch.setenv("LANDMARK_AE_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    run = interrupted_run(tmp_path / "run")
    argv = launched("train", f"resume={run}")  # resume= names the dir: no stamp to agree on
    assert argv[:2] == ["model=m1", f"resume={run}"] and "hydra.output_subdir=null" in argv  # its own overrides first
    assert "cannot run under torchrun" in launched("train", "-m", "model=m1,m2")[0]
    assert "embed runs as one process" in launched("embed")[0]
    monkeypatch.setenv("RANK", "0")
    assert launched("train", "hydra.run.dir=/runs/b") == ["hydra.run.dir=/runs/b"]
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    assert "launch with torchrun" in launched("train", "model=m1")[0]


def interrupted_run(path: Path) -> Path:
    """A train run dir whose process is gone before it finished, composed from `model=m1`."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("epochs: 1\n")
    (path / ".hydra" / "overrides.yaml").write_text("- model=m1\n")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (path / "run.json").write_text(json.dumps({"command": "train", "status": "running", "pid": gone.pid}))
    return path
