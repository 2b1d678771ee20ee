"""`landmark-ae runs`: the runs under the outputs dir as TSV (or a table), read-only."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, compose, one_line_error, run_cli

from landmark_ae.errors import UserError
from landmark_ae.run_list import COLUMNS, find_runs, sort_rows


def make_run(outputs: Path, rel: str, record: dict | str, config: str = "", **files: dict) -> Path:
    run_dir = outputs / rel
    (run_dir / ".hydra").mkdir(parents=True)
    text = record if isinstance(record, str) else json.dumps({"host": socket.gethostname(), **record})
    (run_dir / "run.json").write_text(text)
    if config:
        (run_dir / ".hydra" / "config.yaml").write_text(config)
    for name, content in files.items():
        (run_dir / f"{name}.json").write_text(json.dumps(content))
    return run_dir


def fake_outputs(outputs: Path) -> None:
    make_run(outputs, "train/2026-01-01_00-00-00-000000/0",
             {"command": "train", "status": "complete", "started": "2026-01-01T00:00:01+0000", "data": "gldv2",
              "model": "m1", "objective": {"name": "reconstruct"}, "best_val_loss": 0.0421},
             "epochs: 3\nseed: 7\ndata:\n  name: gldv2\n")
    make_run(outputs, "train/2026-01-01_00-00-00-000000/1",
             {"command": "train", "status": "running", "pid": 2**22 + 12345, "started": "2026-01-01T00:00:01+0000",
              "model": "m2"}, "epochs: 3\nseed: 7\n")
    make_run(outputs, "embed/2026-01-02_00-00-00-000000",
             {"command": "embed", "status": "complete", "started": "2026-01-02T00:00:00+0000", "model": "m1"},
             embed={"dim": 96})
    make_run(outputs, "evaluate/2026-01-03_00-00-00-000000",
             {"command": "evaluate", "status": "complete", "started": "2026-01-03T00:00:00+0000", "model": "m1"},
             "seed: 0\n", metrics={"model": "m1", "results": {"m1": {"nmi": 0.25, "map@100": 0.5},
                                                                "pixels_96": {"nmi": 0.1, "map@100": 0.2}}})
    make_run(outputs, "evaluate/2026-01-04_00-00-00-000000", '{"command": "evalu')  # damaged


def test_runs_lists_every_run_newest_first_with_its_settings_and_results(tmp_path):
    out = tmp_path / "outputs"
    fake_outputs(out)
    rows = find_runs(out, None, None)
    got = [(Path(r["run_dir"]).relative_to(out).as_posix(), r["command"], r["status"]) for r in rows]
    assert got == [
        ("evaluate/2026-01-04_00-00-00-000000", "evaluate", "damaged"),
        ("evaluate/2026-01-03_00-00-00-000000", "evaluate", "complete"),
        ("embed/2026-01-02_00-00-00-000000", "embed", "complete"),
        ("train/2026-01-01_00-00-00-000000/1", "train", "interrupted"),  # its process is gone
        ("train/2026-01-01_00-00-00-000000/0", "train", "complete"),
    ]
    by_dir = {Path(r["run_dir"]).name: r for r in rows}
    assert {k: by_dir["0"][k] for k in ("data", "model", "objective", "epochs", "seed", "best_val_loss")} == {
        "data": "gldv2", "model": "m1", "objective": "reconstruct", "epochs": "3", "seed": "7",
        "best_val_loss": "0.042100"}
    assert by_dir["2026-01-02_00-00-00-000000"]["dim"] == "96"
    evaluation = by_dir["2026-01-03_00-00-00-000000"]
    assert (evaluation["nmi"], evaluation["map@100"], evaluation["seed"]) == ("0.2500", "0.5000", "0")
    assert all(list(r) == COLUMNS for r in rows)
    assert [Path(r["run_dir"]).name for r in find_runs(out, "train", None)] == ["1", "0"]
    assert len(find_runs(out, None, str(out / "train/2026-01-01_00-00-00-000000"))) == 2


def test_runs_cli_prints_tsv_or_a_table_and_leaves_no_run_dir_of_its_own(tmp_path):
    out = tmp_path / "outputs"
    fake_outputs(out)
    before = sorted(os.walk(out))
    proc = run_cli("runs", "command=evaluate", outputs=out)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout), delimiter="\t"))
    assert [(r["status"], r["nmi"]) for r in rows] == [("damaged", ""), ("complete", "0.2500")]
    table = run_cli("runs", "format=table", outputs=out)
    assert table.returncode == 0 and "map@100" in table.stdout and "interrupted" in table.stdout, table.stderr
    assert sorted(os.walk(out)) == before  # read-only: no outputs/runs/, nothing written
    one_line_error(run_cli("runs", "command=trian", outputs=out), "command=trian: choose one of prepare, train")
    one_line_error(run_cli("runs", "sort=mAP", outputs=out), "sort=mAP: no such column; choose one of run_dir,")


SWEEP = "train/2026-02-01_00-00-00-000000"


def fake_sweep(outputs: Path) -> Path:
    """A 4-job train sweep over model x objective.temperature; jobs 0-2 have a train metrics.json, job 3
    is only trained (no metrics.json) and job 2 was resumed."""
    jobs = [("m1", "0.1", 0.30, 0.20), ("m1", "0.5", 0.40, 0.10), ("m2", "0.1", 0.35, 0.30), ("m2", "0.5", None, 0.05)]
    for n, (model, temperature, map100, loss) in enumerate(jobs):
        files = {} if map100 is None else {"metrics": {"model": model, "results": {
            model: {"nmi": 0.5 + n / 100, "ari": 0.1 * n, "map@100": map100, "p@10": map100 / 2},
            "pixels_11x11": {"nmi": 0.01, "ari": 0.0, "map@100": 0.99, "p@10": 0.99}}}}
        run_dir = make_run(outputs, f"{SWEEP}/{n}",
                           {"command": "train", "status": "complete", "started": "2026-02-01T00:00:01+0000",
                            "model": model, "objective": {"name": "contrastive"}, "best_val_loss": loss},
                           f"epochs: 2\nseed: 0\nmodel:\n  name: {model}\n", **files)
        (run_dir / ".hydra" / "overrides.yaml").write_text(
            f"- model={model}\n- objective.temperature={temperature}\n- epochs=2\n- +lr=1e-3\n"
            f"- paths.output_dir={outputs}\n- hydra.launcher.n_jobs=2\n- ~augment\n")
        if n == 2:
            (run_dir / ".hydra" / "resume-2026-02-02_00-00-00-000000").mkdir()
            (run_dir / ".hydra" / "resume-2026-02-02_00-00-00-000000" / "overrides.yaml").write_text(
                f"- resume={run_dir}\n- epochs=4\n- progress=false\n")  # not a setting of the sweep
    return outputs / SWEEP


def test_runs_of_a_sweep_show_its_overrides_and_the_train_runs_own_metrics(tmp_path):
    out = tmp_path / "outputs"
    sweep = fake_sweep(out)
    make_run(out, "train/2026-01-01_00-00-00-000000",
             {"command": "train", "status": "complete", "started": "2026-01-01T00:00:01+0000"})  # no overrides
    rows = find_runs(out, None, str(sweep))
    assert [Path(r["run_dir"]).name for r in rows] == ["3", "2", "1", "0"]
    # overrides that are not fixed columns follow them, sorted; resume, paths.*, hydra.*, ~deletions skipped
    assert list(rows[0]) == [*COLUMNS, "lr", "objective.temperature"]
    by_job = {Path(r["run_dir"]).name: r for r in rows}
    assert [(by_job[n]["objective.temperature"], by_job[n]["lr"]) for n in "0123"] == [
        ("0.1", "1e-3"), ("0.5", "1e-3"), ("0.1", "1e-3"), ("0.5", "1e-3")]  # as given
    assert by_job["2"]["epochs"] == "2" and find_runs(out, "train", None)[-1]["objective.temperature"] == ""
    # scores: the train run's own model row of its metrics.json, empty without one
    assert {c: by_job["1"][c] for c in ("nmi", "ari", "map@100", "p@10")} == {
        "nmi": "0.5100", "ari": "0.1000", "map@100": "0.4000", "p@10": "0.2000"}
    assert {c: by_job["3"][c] for c in ("nmi", "ari", "map@100", "p@10")} == dict.fromkeys(("nmi", "ari", "map@100", "p@10"), "")


def test_runs_sort_puts_the_best_first_and_missing_values_last(tmp_path):
    rows = find_runs(tmp_path / "outputs", None, str(fake_sweep(tmp_path / "outputs")))

    def jobs(column):
        return [Path(r["run_dir"]).name for r in sort_rows(rows, column)]

    assert jobs("map@100") == ["1", "2", "0", "3"]  # descending, job 3 has none
    assert jobs("p@10") == ["1", "2", "0", "3"] and jobs("ari") == ["2", "1", "0", "3"]
    assert jobs("best_val_loss") == ["3", "1", "0", "2"]  # ascending
    assert jobs("model") == ["1", "0", "3", "2"]  # lexical; ties keep newest first
    assert jobs("objective.temperature") == ["2", "0", "3", "1"]
    with pytest.raises(UserError, match=r"sort=mAP: no such column; choose one of run_dir, .*objective.temperature"):
        sort_rows(rows, "mAP")


def runs_stdout(capsys, out: Path, *overrides: str) -> str:
    from landmark_ae.run_list import run_runs

    capsys.readouterr()
    run_runs(compose("runs", f"paths.output_dir={out}", *overrides), out / "unused")
    return capsys.readouterr().out


def test_runs_formats_json_and_csv_and_a_sweep_plot(tmp_path, capsys):
    out = tmp_path / "outputs"
    sweep = fake_sweep(out)
    listed = json.loads(runs_stdout(capsys, out, f"sweep={sweep}", "format=json", "sort=best_val_loss"))
    assert [(Path(r["run_dir"]).name, r["best_val_loss"], r["epochs"], r["map@100"]) for r in listed] == [
        ("3", 0.05, 2, None), ("1", 0.1, 2, 0.4), ("0", 0.2, 2, 0.3), ("2", 0.3, 2, 0.35)]
    assert listed[0]["objective.temperature"] == "0.5"
    table = list(csv.reader(io.StringIO(runs_stdout(capsys, out, f"sweep={sweep}", "format=csv", "sort=nmi"))))
    assert table[0] == [*COLUMNS, "lr", "objective.temperature"] and len(table) == 5
    assert [Path(r[0]).name for r in table[1:]] == ["2", "1", "0", "3"]
    before = sorted(os.walk(out))
    assert runs_stdout(capsys, out, f"sweep={sweep}", "plot=true") == f"plot\t{sweep / 'sweep.png'}\n"
    assert (sweep / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p for p in sweep.iterdir() if p.is_file()] == [sweep / "sweep.png"]  # nothing else written
    (sweep / "sweep.png").unlink()
    assert sorted(os.walk(out)) == before
    with pytest.raises(UserError, match="plot=true needs sweep="):
        runs_stdout(capsys, out, "plot=true")


# Each a run.json that cannot be trusted: shown as `damaged`, skipped by latest-run lookups.
DAMAGED_RECORDS = ['{"command": "tr', '[1, 2]', '{"command": "train", "status": "complete", "pid": "abc"}',
                   '{"command": "train", "status": "complete", "pid": %d}' % 2**70,
                   '{"command": "train", "status": "complete", "pid": [1]}',
                   '{"command": "train", "status": "complete", "started": 5}']


def test_runs_shows_each_kind_of_damaged_record_as_damaged_and_a_job_named_like_a_digit(tmp_path):
    out = tmp_path / "outputs"
    for n, text in enumerate(DAMAGED_RECORDS):
        make_run(out, f"train/2026-01-0{n + 1}_00-00-00-000000", text)
    sweep = "train/2026-02-01_00-00-00-000000"
    for job in ("0", "²", "1"):  # "²".isdigit() is True, yet int("²") fails
        make_run(out, f"{sweep}/{job}", {"command": "train", "status": "complete", "started": "2026-02-01T00:00:00+0000"})
    rows = find_runs(out, None, None)
    assert sorted(r["status"] for r in rows) == ["complete"] * 3 + ["damaged"] * len(DAMAGED_RECORDS)
    jobs = [Path(r["run_dir"]).name for r in find_runs(out, None, str(out / sweep))]
    assert [j for j in jobs if j != "²"] == ["1", "0"] and sorted(jobs) == ["0", "1", "²"]  # numbered: newest first


def test_runs_leaves_out_a_run_dir_removed_while_it_is_listed(tmp_path, monkeypatch):
    from landmark_ae import run_list
    from landmark_ae.runs import Run

    out = tmp_path / "outputs"
    fake_outputs(out)
    listed = Run.under

    def under_then_removed(output_dir, command=None):
        runs = listed(output_dir, command)
        import shutil

        shutil.rmtree(runs[0].path)  # gone between the listing and reading it
        return runs

    monkeypatch.setattr(run_list.Run, "under", under_then_removed)
    rows = find_runs(out, None, None)
    assert len(rows) == 4 and all(Path(r["run_dir"]).is_dir() for r in rows)


def test_runs_whose_reader_stops_early_exits_quietly(tmp_path):
    """`landmark-ae runs | head -1`: stdout closed before it is written; no traceback, exit 141."""
    out = tmp_path / "outputs"
    fake_outputs(out)
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(out)}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, "-m", "landmark_ae", "runs"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and stderr == "", stderr
