"""`landmark-ae runs`: every run under the outputs dir (or one sweep) with its status, settings and results.

Read-only: it reads each run through runs.Run (run.json, .hydra/), and embed.json and metrics.json,
and writes nothing (conf/runs.yaml keeps Hydra's own run dir for this command out of the outputs dir)
but, with `plot=true sweep=<dir>`, that sweep's `sweep.png`. Anything it cannot read is an empty cell;
a run.json it cannot read or trust shows as status `damaged`. A train run's overrides (`model=m2`,
`objective.temperature=0.1`, ...) become columns after the fixed ones, so a sweep's table shows
what each job varied.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from landmark_ae.config import enum_value
from landmark_ae.errors import UserError
from landmark_ae.runs import RUN_RECORD, Run, read_json_or_none

# Stable columns, in this order: `sort -t$'\t' -k3,3` sorts by status, `awk -F'\t' '$2=="train"'` picks trains.
COLUMNS = ["run_dir", "command", "status", "started", "data", "model", "objective", "epochs", "seed",
           "best_val_loss", "dim", "nmi", "ari", "map@100", "p@10"]
METRIC_COLUMNS = ["nmi", "ari", "map@100", "p@10"]  # higher is better: sort= puts the best first
NUMERIC_COLUMNS = {"epochs", "seed", "best_val_loss", "dim", *METRIC_COLUMNS}  # numbers in format=json
SKIPPED_OVERRIDES = ("resume", "paths", "hydra")  # keys (and their sub-keys) that are no sweep setting
COMMANDS = ["prepare", "train", "embed", "evaluate", "query", "serve", "export"]


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _fmt(value: Any, digits: int = 6) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return " ".join(str(value).split())  # no tabs or newlines inside a cell


def overrides(run: Run | Path) -> dict[str, str]:
    """The run's Hydra command-line overrides (.hydra/overrides.yaml: what a sweep gave this job; a
    resume's own, `progress=false` and the like, are not settings), key -> value as given, in their
    order; `resume`, `paths.*` and `hydra.*` (or hydra/...) left out."""
    out: dict[str, str] = {}
    for text in (run if isinstance(run, Run) else Run(run)).overrides:
        if text.startswith("~"):  # a deletion sets nothing
            continue
        key, sep, value = text.lstrip("+").partition("=")
        key = key.strip()
        if sep and key and key.replace("/", ".").split(".")[0] not in SKIPPED_OVERRIDES:
            out[key] = value
    return out


def _set_scores(row: dict[str, str], metrics: Any) -> None:
    """nmi, ari, map@100, p@10 of the run's own model from a metrics.json (evaluate's, or a train run's)."""
    scores = _get(metrics, "results", str(_get(metrics, "model")))
    for column in METRIC_COLUMNS:
        row[column] = _fmt(_get(scores, column), 4)


def describe(run: Run, command_from_path: str) -> dict[str, str]:
    """One row: what run.json and the run's files say about the run (a train run's overrides that are
    not fixed columns follow them)."""
    row = dict.fromkeys(COLUMNS, "")
    row["run_dir"] = str(run.path)
    record = run.record
    if record is None:
        row.update(command=command_from_path, status="damaged")
        return row
    command = str(record.get("command") or command_from_path)
    cfg = run.config
    objective = record.get("objective")
    row.update(
        command=command,
        status=run.status,
        started=_fmt(run.started),
        data=_fmt(record.get("data") or _get(cfg, "data", "name")),
        model=_fmt(record.get("model") or _get(cfg, "model", "name")),
        objective=_fmt(_get(objective, "name") if isinstance(objective, dict) else objective)
        or (_fmt(_get(cfg, "objective", "name")) if command == "train" else ""),
        epochs=_fmt(cfg.get("epochs")),
        seed=_fmt(cfg.get("seed")),
    )
    if command == "train":
        row["best_val_loss"] = _fmt(record.get("best_val_loss"))
        if (run.path / "metrics.json").is_file():  # `train evaluate=true`
            _set_scores(row, read_json_or_none(run.path / "metrics.json"))
        row.update({key: _fmt(value) for key, value in overrides(run).items() if key not in COLUMNS})
    elif command == "embed":
        row["dim"] = _fmt(_get(read_json_or_none(run.path / "embed.json"), "dim"))
    elif command == "evaluate":
        _set_scores(row, read_json_or_none(run.path / "metrics.json"))
    return row


def _job_number(path: Path) -> int:
    """A sweep job's number from its dir name; -1 for any other name (`²` is a digit to str.isdigit)."""
    name = path.name
    return int(name) if name.isascii() and name.isdigit() else -1


def _newest_first(row: dict[str, str]) -> tuple:
    """When it started (run.json's mtime where that is unknown: a damaged record); a sweep's jobs,
    started within the same second, by job number."""
    path = Path(row["run_dir"])
    started = row["started"]
    if not started:
        try:
            started = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime((path / RUN_RECORD).stat().st_mtime))
        except OSError:
            pass
    job = _job_number(path)
    return (started, str(path.parent) if job >= 0 else str(path), job)


def find_runs(output_dir: Path, command: str | None, sweep: str | None) -> list[dict[str, str]]:
    """Rows for the run dirs under output_dir (<command>/<time>/ and sweep jobs <command>/<time>/<n>/),
    or under one sweep dir, newest first. A run dir removed while it is listed is left out."""
    if sweep is not None:
        root = Path(sweep).expanduser()
        if not root.is_dir():
            raise UserError(f"sweep={sweep}: no such directory; give a multirun sweep dir, e.g. "
                            f"{output_dir}/train/<time>")
        guess = root.parent.name  # <output dir>/<command>/<time>
        found = [(run, guess) for run in Run.sweep_jobs(root)]
    else:
        found = [(run, run.path.relative_to(output_dir).parts[0]) for run in Run.under(output_dir, command)]
    rows = [describe(run, guess) for run, guess in found if run.record is not None or run.damaged]
    if command:
        rows = [row for row in rows if row["command"] == command]
    # Every row gets every column: the fixed ones, then the union of the overrides, sorted.
    columns = COLUMNS + sorted({key for row in rows for key in row} - set(COLUMNS))
    rows = [{c: row.get(c, "") for c in columns} for row in rows]
    return sorted(rows, key=_newest_first, reverse=True)


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def sort_rows(rows: list[dict[str, str]], column: str) -> list[dict[str, str]]:
    """rows by `column`: metrics (nmi, ari, map@100, p@10) highest first, anything else lowest first
    (best_val_loss, numbers numerically, then text lexically); rows without a value last, and
    ties kept in their order (newest first)."""
    columns = list(rows[0]) if rows else COLUMNS
    if column not in columns:
        raise UserError(f"sort={column}: no such column; choose one of {', '.join(columns)}")
    present = [row for row in rows if row[column] != "" and row[column] != "nan"]
    missing = [row for row in rows if row[column] == "" or row[column] == "nan"]

    def key(row: dict[str, str]) -> tuple:
        number = _number(row[column])
        return (0, number, "") if number is not None else (1, 0.0, row[column])

    if column in METRIC_COLUMNS:
        present.sort(key=lambda row: _number(row[column]) or 0.0, reverse=True)  # stable, also reversed
    else:
        present.sort(key=key)
    return present + missing


def _json_cell(column: str, cell: str) -> Any:
    if cell == "":
        return None
    if column in NUMERIC_COLUMNS:
        number = _number(cell)
        if number is not None:
            return int(number) if column in ("epochs", "seed", "dim") and number.is_integer() else number
    return cell


def plot_sweep(rows: list[dict[str, str]], sweep_dir: Path) -> Path:
    """<sweep_dir>/sweep.png: map@100 (best_val_loss where no run has it) against the first override
    that varies across the runs, one line per combination of the other varying overrides."""
    from landmark_ae.figures import plot_sweep as draw

    settings = [overrides(Path(row["run_dir"])) for row in rows]
    keys = list(dict.fromkeys(key for s in settings for key in s))  # in the order they were given
    varying = [key for key in keys if len({s.get(key, "") for s in settings}) > 1]
    if not varying:
        raise UserError(f"plot=true: no override varies across the {len(rows)} run(s) of {sweep_dir}: "
                        "nothing to plot against")
    x_key, others = varying[0], varying[1:]
    y_column = "map@100" if any(_number(row["map@100"]) is not None for row in rows) else "best_val_loss"
    series: dict[str, list[tuple[str, float]]] = {}
    for row, s in zip(rows, settings, strict=True):
        y = _number(row[y_column])
        if y is not None and x_key in s:
            label = ", ".join(f"{key}={s.get(key, '')}" for key in others) or y_column
            series.setdefault(label, []).append((s[x_key], y))
    if not series:
        raise UserError(f"plot=true: no run of {sweep_dir} has {y_column} yet")
    return draw(series, x_key, y_column, sweep_dir / "sweep.png", title=f"{sweep_dir.name}: {y_column} by {x_key}")


def run_runs(cfg: DictConfig, run_dir: Path) -> None:
    command = cfg.command
    if command is not None and command not in COMMANDS:
        raise UserError(f"command={command}: choose one of {', '.join(COMMANDS)} (or leave it out for all)")
    if cfg.plot and cfg.sweep is None:
        raise UserError("plot=true needs sweep=<a multirun sweep dir>: sweep.png is written there")
    rows = find_runs(Path(cfg.paths.output_dir), command, cfg.sweep)
    columns = list(rows[0]) if rows else COLUMNS
    if cfg.sort is not None:
        rows = sort_rows(rows, str(cfg.sort))
    if cfg.plot:
        path = plot_sweep(rows, Path(cfg.sweep).expanduser())
        sys.stdout.write(f"plot\t{path}\n")
        sys.stdout.flush()
        return None
    fmt = enum_value(cfg.format)
    if fmt == "table":
        from rich.table import Table

        from landmark_ae.ui import make_console

        table = Table(*columns, title=f"{len(rows)} run(s) under {cfg.sweep or cfg.paths.output_dir}")
        for row in rows:
            table.add_row(*(row[c] for c in columns))
        make_console(sys.stdout).print(table)
        return None
    if fmt == "json":
        sys.stdout.write(json.dumps([{c: _json_cell(c, row[c]) for c in columns} for row in rows], indent=1) + "\n")
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([row[c] for c in columns] for row in rows)
    else:
        lines = ["\t".join(columns), *("\t".join(row[c] for c in columns) for row in rows)]
        sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return None
