"""Reproduce the seed study's Table 1: prepare -> train M1, M2, M3 (one Hydra multirun) -> embed -> evaluate.

    python scripts/table1.py [data=gldv2 data.root=/path] [data_dir=<prepare run>] [epochs=20] [models=m1,m2,m3]
        [launcher=joblib|submitit_local|...]

`data*` overrides go to prepare and train; `data_dir=` reuses a prepared dataset instead of
preparing one; `epochs=` and `models=` go to the train sweep, and `launcher=` runs it with that Hydra
launcher (`hydra/launcher=joblib`: the models train side by side). The sweep's jobs are read back
from their run.json files (runs.Run.sweep_jobs), so launchers that print nothing (submitit) work too.
Writes table1.md and table1.csv to a new outputs/table1/<timestamp>/ and prints `key<TAB>value`
lines (run_dir first) on stdout. Arguments are composed against Table1Args: a misspelt key gets a
did-you-mean, exit 2. Ctrl-C: the step running records itself interrupted, and one line names its
run and how to resume it, exit 130.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from landmark_ae.chain import embed_and_evaluate, quote, run_cli, run_step
from landmark_ae.common import RUN_STAMP_FORMAT, default_output_dir
from landmark_ae.errors import UserError
from landmark_ae.report import SEED_TABLE1
from landmark_ae.runs import Run, atomic_path, write_text_atomic
from landmark_ae.script_config import parse_args, run_script

SEED = SEED_TABLE1  # the seed study's Table 1 (20 epochs on its GLDv2 slice), stated once in landmark_ae/report.py
ROWS = [("best_val_loss", "Best validation loss"), ("nmi", "NMI"), ("ri", "RI"), ("ari", "ARI"), ("ami", "AMI"),
        ("map@100", "mAP@100"), ("p@1", "P@1"), ("p@10", "P@10"), ("recall@100", "recall@100")]


@dataclass
class Table1Args:
    """The script's arguments (data=..., data.*=... pass through to prepare and train)."""

    data_dir: Optional[str] = None  # a prepare run to reuse; default: run prepare with the data overrides
    epochs: int = 20
    models: list[str] = field(default_factory=lambda: ["m1", "m2", "m3"])
    launcher: Optional[str] = None  # the train sweep's Hydra launcher (joblib, submitit_local, ...)


def train_sweep(args: Table1Args, data_args: list[str], data_dir: str, outputs: Path) -> list[dict]:
    """The models as one `train -m` sweep in a sweep dir chosen here; its jobs' run records, in job order."""
    sweep = (outputs / "train" / datetime.now().strftime(RUN_STAMP_FORMAT)).resolve()
    launcher = [f"hydra/launcher={args.launcher}"] if args.launcher else []
    argv = ["train", "-m", *launcher, *data_args, f"data_dir={data_dir}", f"model={','.join(args.models)}",
            f"epochs={args.epochs}", f"hydra.sweep.dir={quote(sweep)}"]
    code, _ = run_cli(argv, sweep)
    if code != 0:
        sys.exit(f"table1: `landmark-ae {' '.join(argv)}` failed (exit {code})")
    jobs = sorted(Run.sweep_jobs(sweep), key=lambda run: int(run.path.name) if run.path.name.isdigit() else -1)
    if not jobs or any(job.status != "complete" for job in jobs):
        sys.exit(f"table1: the train sweep in {sweep} did not complete: `landmark-ae runs sweep={sweep}` shows its jobs")
    return [{**(job.record or {}), "run_dir": str(job.path)} for job in jobs]


def score(trains: list[dict]) -> tuple[dict[str, dict], dict | None]:
    """Each train run embedded and evaluated (the protocol: test images query train+val); the model
    rows and the raw-pixel baseline (M2's, else the first)."""
    rows: dict[str, dict] = {}
    pixels: dict | None = None
    for train in trains:
        try:
            evaluation = embed_and_evaluate(train["run_dir"], queries="test")
        except UserError as exc:
            sys.exit(f"table1: {exc}")
        metrics = evaluation.evaluation
        model = train["model"]
        rows[model] = {"best_val_loss": float(train["best_val_loss"]), **metrics["results"][model],
                       "train_run": train["run_dir"], "evaluate_run": str(evaluation.evaluate_run)}
        baseline = {k: v for k, v in metrics["results"].items() if k.startswith("pixels_")}
        if model == "m2" or pixels is None:
            pixels = next(({"name": k, **v} for k, v in baseline.items()), None)
    return rows, pixels


def fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("–" if v in ("", None) else str(v))


def write_table(out: Path, rows: dict[str, dict], pixels: dict | None, title: str, data_dir: str) -> list[str]:
    """table1.csv and table1.md in `out`; the Markdown lines."""
    models = list(rows)
    with atomic_path(out / "table1.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", *models, pixels["name"] if pixels else "pixels", *(f"seed_{m}" for m in models)])
        for key, _ in ROWS:
            writer.writerow([key, *(rows[m].get(key, "") for m in models), pixels.get(key, "") if pixels else "",
                             *(SEED.get(m, {}).get(key, "") for m in models)])
    pixels_header = f"raw pixels ({pixels['name'].removeprefix('pixels_')})" if pixels else "raw pixels"
    header = [*(m.upper() for m in models), pixels_header, *(f"seed {m.upper()}" for m in models)]
    n_seeds = max((int(rows[m].get("kmeans_seeds") or 1) for m in models), default=1)
    over = f"; NMI/RI/ARI/AMI: the mean over {n_seeds} k-means seeds" if n_seeds > 1 else ""
    lines = [
        f"# Table 1 — {title}",
        "",
        f"Prepared dataset: `{data_dir}`. Clustering: k-means on train embeddings (k = landmarks in train{over}). "
        "Retrieval: test images query train+val. Seed columns: the study's published numbers (its GLDv2 slice).",
        "",
        "| metric | " + " | ".join(header) + " |",
        "|---|" + "---|" * len(header),
    ]
    for key, label in ROWS:
        cells = [fmt(rows[m].get(key, "")) for m in models] + [fmt(pixels.get(key, "") if pixels else "")]
        cells += [fmt(SEED.get(m, {}).get(key, "")) for m in models]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Runs: " + ", ".join(f"{m}: `{rows[m]['train_run']}`" for m in models), ""]
    write_text_atomic(out / "table1.md", "\n".join(lines))
    return lines


def main(argv: list[str]) -> None:
    args, data_args = parse_args(Table1Args, argv, "table1", passthrough=("data",), doc=__doc__)
    outputs = Path(default_output_dir())
    try:
        data_dir = args.data_dir or run_step("prepare", data_args)["run_dir"]
    except UserError as exc:
        sys.exit(f"table1: {exc}")
    rows, pixels = score(train_sweep(args, data_args, data_dir, outputs))
    out = outputs / "table1" / datetime.now().strftime(RUN_STAMP_FORMAT)
    out.mkdir(parents=True)
    data = next((a.split("=", 1)[1] for a in data_args if a.startswith("data=")), "synthetic")
    lines = write_table(out, rows, pixels, f"{data}, {args.epochs} epochs", data_dir)
    print("\n".join(lines), file=sys.stderr)
    print(f"run_dir\t{out}")
    for m in rows:
        for key, _ in ROWS:
            print(f"{m}.{key}\t{rows[m].get(key)}")


if __name__ == "__main__":
    run_script("table1", main, sys.argv[1:])
