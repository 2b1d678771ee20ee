"""train run -> `landmark-ae embed` -> `landmark-ae evaluate`: the one chain that scores a train run.

`train evaluate=true`, scripts/table1.py and scripts/quality.py all score a finished train run this
way. Each step is an ordinary CLI run in a subprocess of the same Python, in a run dir this module
chooses (`hydra.run.dir=<outputs>/<command>/<stamp>`), so what the step made is read from that dir:
its run.json (status and record) and, for evaluate, metrics.json, never from its stdout. Nothing
here imports torch or the retrieval modules.

Why subprocesses rather than calling the stages in-process: each step is a @hydra.main of its own
(Hydra's global state, its run dir, .hydra/ record, logging and lineage, as when a user runs it);
`train evaluate=true` already runs inside a Hydra job (perhaps a joblib worker), where a second
@hydra.main cannot run; a step's expected failure (sys.exit), crash or memory stays in the child;
and a Ctrl-C reaches the child, which records its run as interrupted before this process goes on.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from landmark_ae.common import RUN_STAMP_FORMAT, default_output_dir
from landmark_ae.errors import UserError
from landmark_ae.runs import read_run_record

log = logging.getLogger(__name__)

# The model row's scores shown as `eval.<key>` lines and kept in the train run's run.json.
HEADLINE = ("nmi", "ari", "map@100", "p@10")
RESUMABLE = ("prepare", "train", "embed")  # the commands that take resume=<run dir>
STOP_GRACE_S = 2.0  # a terminal's Ctrl-C reaches the step too: it gets this long to stop on its own
STOP_WAIT_S = 120.0  # then it is sent the signal, and gets this long to record itself


@dataclass
class Evaluation:
    metrics: dict[str, Any]  # the model's row of the evaluate run's metrics.json (nmi, ri, ari, map@100, ...)
    evaluation: dict[str, Any]  # the whole metrics.json (every row, counts, settings, lineage)
    embed_run: Path
    evaluate_run: Path


class StepInterrupted(KeyboardInterrupt):
    """A step ended by Ctrl-C or SIGTERM. A KeyboardInterrupt, so a caller that handles those (a train
    job's execute) goes on as before; the scripts print `str()` of it: the run and how to go on."""

    def __init__(self, command: str, run_dir: Path, code: int) -> None:
        super().__init__(command, run_dir, code)
        self.command, self.run_dir, self.code = command, run_dir, code

    def __str__(self) -> str:
        if not self.run_dir.is_dir():  # the step removed its run: it had done nothing yet
            return f"interrupted during `landmark-ae {self.command}`, which had done nothing yet: run it again"
        if not (self.run_dir / "run.json").exists() and any(self.run_dir.glob("*/run.json")):  # a sweep's dir
            return (f"interrupted during `landmark-ae {self.command} -m`; its sweep {self.run_dir} keeps its finished "
                    f"work: continue a job with `landmark-ae {self.command} resume={self.run_dir}/<job>`")
        how = (f"continue with `landmark-ae {self.command} resume={self.run_dir}`" if self.command in RESUMABLE
               else "run it again")
        return f"interrupted during `landmark-ae {self.command}`; its run {self.run_dir} keeps its finished work: {how}"


def quote(value: object) -> str:
    """A value as a quoted Hydra override value: paths may hold `=`, `,`, spaces or brackets."""
    return "'" + str(value).replace("'", "\\'") + "'"


def new_run_dir(output_dir: Path | str | None, command: str) -> Path:
    """A run dir for `command` that does not exist yet, where the CLI would put one: <outputs>/<command>/<stamp>."""
    root = Path(output_dir if output_dir is not None else default_output_dir()) / command
    while True:
        run_dir = root / datetime.now().strftime(RUN_STAMP_FORMAT)
        if not run_dir.exists():
            return run_dir


def _announce(argv: list[str]) -> None:
    if logging.getLogger().handlers:  # a CLI job: its console and its log file
        log.info("+ landmark-ae %s", " ".join(argv))
    else:  # a script
        print(f"+ landmark-ae {' '.join(argv)}", file=sys.stderr, flush=True)


def _stop(proc: subprocess.Popen, signum: int) -> None:
    """Let a step that was signalled with this process (a terminal's Ctrl-C) end on its own; else pass
    the signal on; wait for it to record its run; kill it only if it does not."""
    for wait_s, action in ((STOP_GRACE_S, lambda: proc.send_signal(signum)), (STOP_WAIT_S, proc.kill)):
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            action()
    proc.wait()


def run_cli(argv: list[str], interrupted_run: Path) -> tuple[int, str]:
    """Run `landmark-ae <argv>` (stderr passes through, stdout is not needed); its exit code and last
    stderr line. A Ctrl-C or SIGTERM here, or one that ended the step, raises StepInterrupted naming
    `interrupted_run` once the step has ended."""
    _announce(argv)
    proc = subprocess.Popen([sys.executable, "-m", "landmark_ae", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    last = ""
    try:
        for line in proc.stderr:
            sys.stderr.write(line)
            if line.strip():
                last = line.strip()
        code = proc.wait()
    except BaseException as exc:
        _stop(proc, signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise StepInterrupted(argv[0], interrupted_run, 130 if isinstance(exc, KeyboardInterrupt) else 143) from None
        raise
    if code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
        raise StepInterrupted(argv[0], interrupted_run, 130 if code in (130, -signal.SIGINT) else 143)
    return code, last


def run_step(command: str, args: list[str], output_dir: Path | str | None = None) -> dict[str, Any]:
    """Run `landmark-ae <command> <args>` in a new run dir under output_dir (default: the CLI's own,
    i.e. LANDMARK_AE_OUTPUTS); its run.json record with `run_dir` added, or a UserError holding the
    step's one-line error."""
    run_dir = new_run_dir(output_dir, command)
    paths = [f"paths.output_dir={quote(output_dir)}"] if output_dir is not None else []
    code, last = run_cli([command, *paths, f"hydra.run.dir={quote(run_dir)}", *args], run_dir)
    if code != 0:
        raise UserError(last if f"landmark-ae {command}" in last or "error:" in last
                        else f"landmark-ae {command} failed (exit {code}): {last}")
    record = read_run_record(run_dir)
    if not isinstance(record, dict) or record.get("status") != "complete":
        raise UserError(f"landmark-ae {command} ended without recording {run_dir / 'run.json'} as complete")
    return {**record, "run_dir": str(run_dir)}


def embed_and_evaluate(train_run: Path | str, queries: str = "val", embed: Sequence[str] = (),
                       evaluate: Sequence[str] = (), output_dir: Path | str | None = None) -> Evaluation:
    """Embed `train_run` with the `embed` overrides, evaluate that with `queries=` and the `evaluate`
    overrides; both runs go to output_dir (default: the CLI's own, i.e. LANDMARK_AE_OUTPUTS)."""
    embedded = run_step("embed", [f"train_run={quote(train_run)}", "progress=false", *embed], output_dir)
    evaluated = run_step("evaluate", [f"embed_run={quote(embedded['run_dir'])}", f"queries={queries}", *evaluate],
                         output_dir)
    evaluate_run = Path(evaluated["run_dir"])
    evaluation = json.loads((evaluate_run / "metrics.json").read_text())
    return Evaluation(metrics=evaluation["results"][evaluation["model"]], evaluation=evaluation,
                      embed_run=Path(embedded["run_dir"]), evaluate_run=evaluate_run)


def override_value(value: Any) -> str:
    from landmark_ae.config import enum_value

    value = enum_value(value)
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def evaluate_train_run(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """`train evaluate=true`: the chain on this train run; metrics.json and run.json in it record the
    scores and the embed/evaluate runs. Returns the `eval.<key>` result lines."""
    from landmark_ae.config import enum_value
    from landmark_ae.runs import read_run_record, write_json_atomic, write_run_record

    queries = enum_value(cfg.eval_queries)
    embed = [f"{key}={override_value(value)}" for key, value in cfg.eval_embed.items()]
    # The model's scores only: a sweep's trials need no raw-pixel baseline each.
    result = embed_and_evaluate(run_dir, queries=queries, embed=embed, evaluate=["pixel_baseline=false"],
                                output_dir=cfg.paths.output_dir)
    runs = {"embed_run": str(result.embed_run.resolve()), "evaluate_run": str(result.evaluate_run.resolve())}
    write_json_atomic(run_dir / "metrics.json", {**result.evaluation, **runs})
    headline = {key: result.metrics[key] for key in HEADLINE if key in result.metrics}
    status = (read_run_record(run_dir) or {}).get("status", "complete")
    write_run_record(run_dir, "train", status, eval_queries=queries, **runs, **headline)
    out: dict[str, Any] = {"eval.queries": queries, "eval.dim": result.metrics.get("dim")}
    for key, value in result.metrics.items():
        if key != "dim" and isinstance(value, (int, float)):
            out[f"eval.{key}"] = f"{value:.6f}" if isinstance(value, float) else value
    return {**out, "eval.embed_run": runs["embed_run"], "eval.evaluate_run": runs["evaluate_run"]}
