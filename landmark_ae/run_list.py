"""`landmark-ae runs`: every run under the outputs dir (or one sweep) with its status, settings and results.

Read-only: it reads run.json, .hydra/config.yaml, embed.json and metrics.json, and writes nothing
(conf/runs.yaml keeps Hydra's own run dir for this command out of the outputs dir). Anything it
cannot read is an empty cell; a run.json it cannot read shows as status `damaged`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from landmark_ae.config import enum_value
from landmark_ae.errors import UserError
from landmark_ae.runs import RUN_RECORD, run_status

# Stable columns, in this order: `sort -t$'\t' -k3,3` sorts by status, `awk -F'\t' '$2=="train"'` picks trains.
COLUMNS = ["run_dir", "command", "status", "started", "data", "model", "objective", "epochs", "seed",
           "best_val_loss", "dim", "nmi", "map@100"]
COMMANDS = ["prepare", "train", "embed", "evaluate", "query", "serve"]


def _read(path: Path) -> Any:
    """A JSON or YAML file's contents, or None if it is missing or unreadable."""
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text(encoding="utf-8"))
        return OmegaConf.to_container(OmegaConf.load(path))
    except Exception:  # a damaged file of any kind is an empty cell, never a traceback
        return None


def _config(run_dir: Path) -> dict:
    """The run's composed config: the latest resume's if it was resumed, else its first."""
    hydra = run_dir / ".hydra"
    candidates = [hydra / "config.yaml", *sorted(hydra.glob("resume-*/config.yaml"))]
    for path in reversed(candidates):
        cfg = _read(path) if path.is_file() else None
        if isinstance(cfg, dict):
            return cfg
    return {}


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


def describe(run_dir: Path, command_from_path: str) -> dict[str, str]:
    """One row: what run.json and the run's files say about run_dir."""
    record = _read(run_dir / RUN_RECORD)
    row = dict.fromkeys(COLUMNS, "")
    row["run_dir"] = str(run_dir)
    if not isinstance(record, dict):
        row.update(command=command_from_path, status="damaged")
        return row
    command = str(record.get("command") or command_from_path)
    cfg = _config(run_dir)
    objective = record.get("objective")
    row.update(
        command=command,
        status=run_status(record),
        started=_fmt(record.get("started")),
        data=_fmt(record.get("data") or _get(cfg, "data", "name")),
        model=_fmt(record.get("model") or _get(cfg, "model", "name")),
        objective=_fmt(_get(objective, "name") if isinstance(objective, dict) else objective)
        or (_fmt(_get(cfg, "objective", "name")) if command == "train" else ""),
        epochs=_fmt(cfg.get("epochs")),
        seed=_fmt(cfg.get("seed")),
    )
    if command == "train":
        row["best_val_loss"] = _fmt(record.get("best_val_loss"))
    elif command == "embed":
        row["dim"] = _fmt(_get(_read(run_dir / "embed.json"), "dim"))
    elif command == "evaluate":
        metrics = _read(run_dir / "metrics.json")
        scores = _get(metrics, "results", str(_get(metrics, "model")))
        row["nmi"], row["map@100"] = _fmt(_get(scores, "nmi"), 4), _fmt(_get(scores, "map@100"), 4)
    return row


def find_runs(output_dir: Path, command: str | None, sweep: str | None) -> list[dict[str, str]]:
    """Rows for the run dirs under output_dir (<command>/<time>/ and sweep jobs <command>/<time>/<n>/),
    or under one sweep dir, newest first."""
    if sweep is not None:
        root = Path(sweep).expanduser()
        if not root.is_dir():
            raise UserError(f"sweep={sweep}: no such directory; give a multirun sweep dir, e.g. "
                            f"{output_dir}/train/<time>")
        records = list(root.glob(f"*/{RUN_RECORD}"))
        guess = root.parent.name  # <output dir>/<command>/<time>
        found = [(path.parent, guess) for path in records]
    else:
        roots = [output_dir / command] if command else sorted(p for p in output_dir.glob("*") if p.is_dir())
        found = [(path.parent, root.name) for root in roots
                 for pattern in (f"*/{RUN_RECORD}", f"*/*/{RUN_RECORD}") for path in root.glob(pattern)]
    rows = [describe(run_dir, guess) for run_dir, guess in found]
    if command:
        rows = [row for row in rows if row["command"] == command]

    def newest(row: dict[str, str]) -> tuple:
        # When it started (run.json's mtime where that is unknown: a damaged record); a sweep's
        # jobs, started within the same second, by job number.
        path = Path(row["run_dir"])
        started = row["started"]
        if not started:
            try:
                started = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime((path / RUN_RECORD).stat().st_mtime))
            except OSError:
                pass
        job = int(path.name) if path.name.isdigit() else -1
        return (started, str(path.parent) if job >= 0 else str(path), job)

    return sorted(rows, key=newest, reverse=True)


def run_runs(cfg: DictConfig, run_dir: Path) -> None:
    command = cfg.command
    if command is not None and command not in COMMANDS:
        raise UserError(f"command={command}: choose one of {', '.join(COMMANDS)} (or leave it out for all)")
    rows = find_runs(Path(cfg.paths.output_dir), command, cfg.sweep)
    if enum_value(cfg.format) == "table":
        from rich.table import Table

        from landmark_ae.ui import make_console

        table = Table(*COLUMNS, title=f"{len(rows)} run(s) under {cfg.sweep or cfg.paths.output_dir}")
        for row in rows:
            table.add_row(*(row[c] for c in COLUMNS))
        make_console(sys.stdout).print(table)
        return None
    lines = ["\t".join(COLUMNS), *("\t".join(row[c] for c in COLUMNS) for row in rows)]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return None
