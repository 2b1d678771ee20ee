"""Reproduce the seed study's Table 1: prepare -> train M1, M2, M3 (one Hydra multirun) -> embed -> evaluate.

    python scripts/table1.py [data=gldv2 data.root=/path] [data_dir=<prepare run>] [epochs=20] [models=m1,m2,m3]
        [launcher=joblib|submitit_local|...]

`data*` overrides go to prepare and train; `data_dir=` reuses a prepared dataset instead of
preparing one; `epochs=` and `models=` go to the train sweep, and `launcher=` runs it with that Hydra
launcher (`hydra/launcher=joblib`: the models train side by side). The sweep's jobs are read back
with `landmark-ae runs sweep=<its dir>`, so launchers that print nothing (submitit) work too. Writes table1.md and table1.csv to a
new outputs/table1/<timestamp>/ and prints `key<TAB>value` lines (run_dir first) on stdout.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from landmark_ae.chain import embed_and_evaluate
from landmark_ae.errors import UserError

# The seed study's Table 1 (20 epochs on its GLDv2 slice).
SEED = {
    "m1": {"best_val_loss": 0.054003, "nmi": 0.139366, "ri": 0.925350},
    "m2": {"best_val_loss": 0.040074, "nmi": 0.182436, "ri": 0.926809},
    "m3": {"best_val_loss": 0.024561, "nmi": 0.189234, "ri": 0.927001},
}
ROWS = [("best_val_loss", "Best validation loss"), ("nmi", "NMI"), ("ri", "RI"), ("ari", "ARI"), ("ami", "AMI"),
        ("map@100", "mAP@100"), ("p@1", "P@1"), ("p@10", "P@10"), ("recall@100", "recall@100")]


def cli(*args: str) -> list[dict[str, str]]:
    """Run landmark-ae; return the key/value blocks it printed (one per job of a multirun)."""
    print(f"+ landmark-ae {' '.join(args)}", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, "-m", "landmark_ae", *args], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"table1: `landmark-ae {' '.join(args)}` failed (exit {proc.returncode})")
    blocks: list[dict[str, str]] = []
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("\t")
        if key == "run_dir":
            blocks.append({})
        if blocks:
            blocks[-1][key] = value
    return blocks


def sweep_jobs(sweep: Path) -> list[dict[str, str]]:
    """The train sweep's jobs, in job order, as `landmark-ae runs sweep=<dir>` lists them."""
    proc = subprocess.run([sys.executable, "-m", "landmark_ae", "runs", "command=train", f"sweep={sweep}"],
                          stdout=subprocess.PIPE, text=True)
    rows = list(csv.DictReader(proc.stdout.splitlines(), delimiter="\t")) if proc.returncode == 0 else []
    rows.sort(key=lambda row: int(Path(row["run_dir"]).name))
    if not rows or any(row["status"] != "complete" for row in rows):
        sys.exit(f"table1: the train sweep in {sweep} did not complete: `landmark-ae runs sweep={sweep}` shows its jobs")
    return rows


def main(argv: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    data_args = [f"{k}={v}" for k, v in opts.items() if k == "data" or k.startswith("data.")]
    epochs, models = opts.get("epochs", "20"), opts.get("models", "m1,m2,m3")
    data_dir = opts.get("data_dir") or cli("prepare", *data_args)[0]["run_dir"]
    outputs = Path(os.environ.get("LANDMARK_AE_OUTPUTS", "outputs"))
    sweep = (outputs / "train" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")).resolve()
    launcher = [f"hydra/launcher={opts['launcher']}"] if opts.get("launcher") else []
    cli("train", "-m", *launcher, *data_args, f"data_dir={data_dir}", f"model={models}", f"epochs={epochs}",
        f"hydra.sweep.dir={sweep}")
    trains = sweep_jobs(sweep)
    rows: dict[str, dict] = {}
    pixels: dict | None = None
    for train in trains:
        try:  # the protocol: test images query train+val
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

    out = outputs / "table1" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    out.mkdir(parents=True)
    models_done = list(rows)
    with open(out / "table1.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", *models_done, pixels["name"] if pixels else "pixels",
                         *(f"seed_{m}" for m in models_done)])
        for key, _ in ROWS:
            writer.writerow([key, *(rows[m].get(key, "") for m in models_done), pixels.get(key, "") if pixels else "",
                             *(SEED.get(m, {}).get(key, "") for m in models_done)])

    def fmt(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("–" if v in ("", None) else str(v))

    pixels_header = f"raw pixels ({pixels['name'].removeprefix('pixels_')})" if pixels else "raw pixels"
    header = [*(m.upper() for m in models_done), pixels_header,
              *(f"seed {m.upper()}" for m in models_done)]
    lines = [
        f"# Table 1 — {opts.get('data', 'synthetic')}, {epochs} epochs",
        "",
        f"Prepared dataset: `{data_dir}`. Clustering: k-means on train embeddings (k = landmarks in train). "
        "Retrieval: test images query train+val. Seed columns: the study's published numbers (its GLDv2 slice).",
        "",
        "| metric | " + " | ".join(header) + " |",
        "|---|" + "---|" * len(header),
    ]
    for key, label in ROWS:
        cells = [fmt(rows[m].get(key, "")) for m in models_done] + [fmt(pixels.get(key, "") if pixels else "")]
        cells += [fmt(SEED.get(m, {}).get(key, "")) for m in models_done]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Runs: " + ", ".join(f"{m}: `{rows[m]['train_run']}`" for m in models_done), ""]
    (out / "table1.md").write_text("\n".join(lines))
    print("\n".join(lines), file=sys.stderr)
    print(f"run_dir\t{out}")
    for m in models_done:
        for key, _ in ROWS:
            print(f"{m}.{key}\t{rows[m].get(key)}")


if __name__ == "__main__":
    main(sys.argv[1:])
