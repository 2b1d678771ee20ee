"""`landmark-ae runs`: the runs under the outputs dir as TSV (or a table), read-only."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
from pathlib import Path

from conftest import one_line_error, run_cli

from landmark_ae.run_list import COLUMNS, find_runs


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
