"""train run -> `landmark-ae embed` -> `landmark-ae evaluate`: the one chain that scores a train run.

`train evaluate=true`, scripts/table1.py and scripts/quality.py all score a finished train run this
way. Each step is an ordinary CLI run in a subprocess of the same Python (its own run dir with
.hydra/, run.json and the lineage embed and evaluate record themselves), in the same outputs dir.
Nothing here imports torch or the retrieval modules.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from landmark_ae.errors import UserError

log = logging.getLogger(__name__)

# The model row's scores shown as `eval.<key>` lines and kept in the train run's run.json.
HEADLINE = ("nmi", "ari", "map@100", "p@10")


@dataclass
class Evaluation:
    metrics: dict[str, Any]  # the model's row of the evaluate run's metrics.json (nmi, ri, ari, map@100, ...)
    evaluation: dict[str, Any]  # the whole metrics.json (every row, counts, settings, lineage)
    embed_run: Path
    evaluate_run: Path


def quote(value: object) -> str:
    """A value as a quoted Hydra override value: paths may hold `=`, `,`, spaces or brackets."""
    return "'" + str(value).replace("'", "\\'") + "'"


def run_step(command: str, args: list[str]) -> dict[str, str]:
    """Run `landmark-ae <command> <args>` (stderr passes through); its `key<TAB>value` stdout, or a
    UserError holding its one-line error."""
    if logging.getLogger().handlers:  # a CLI job: its console and its log file
        log.info("+ landmark-ae %s %s", command, " ".join(args))
    else:  # a script
        print(f"+ landmark-ae {command} {' '.join(args)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "landmark_ae", command, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    last = ""
    assert proc.stderr is not None and proc.stdout is not None
    try:
        for line in proc.stderr:  # stdout is a few dozen lines: it cannot fill its pipe meanwhile
            sys.stderr.write(line)
            if line.strip():
                last = line.strip()
        stdout = proc.stdout.read()
        code = proc.wait()
    except BaseException:  # Ctrl-C, SIGTERM: the step ends with its caller, recording itself as interrupted
        proc.terminate()
        proc.wait()
        raise
    if code != 0:
        raise UserError(last if f"landmark-ae {command}" in last or "error:" in last
                        else f"landmark-ae {command} failed (exit {code}): {last}")
    out = dict(line.split("\t", 1) for line in stdout.splitlines() if "\t" in line)
    if "run_dir" not in out:
        raise UserError(f"landmark-ae {command} printed no run_dir")
    return out


def embed_and_evaluate(train_run: Path | str, queries: str = "val", embed: Sequence[str] = (),
                       evaluate: Sequence[str] = (), output_dir: Path | str | None = None) -> Evaluation:
    """Embed `train_run` with the `embed` overrides, evaluate that with `queries=` and the `evaluate`
    overrides; both runs go to output_dir (default: the CLI's own, i.e. LANDMARK_AE_OUTPUTS)."""
    paths = [f"paths.output_dir={quote(output_dir)}"] if output_dir is not None else []
    embedded = run_step("embed", [*paths, f"train_run={quote(train_run)}", "progress=false", *embed])
    evaluated = run_step("evaluate", [*paths, f"embed_run={quote(embedded['run_dir'])}", f"queries={queries}", *evaluate])
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
