"""The quality comparison: seed models vs the new ones on one split, one table (mean ± std over seeds).

    python scripts/quality.py data=landmarks10 data_dir=<prepare run> [epochs=20] [seeds=0,1,2]
        [queries=test|val] [threads=N] [device=auto] [rows=NAME,NAME] [headline_only=true]
        [reuse=<outputs/train dir>] [experiment=conf/quality.yaml]
    python scripts/quality.py protocol=unseen data=landmarks10 data.root=<landmarks10> [seen_dir=<prepare run>]
        [unseen_dir=<prepare run>] [split=5] [seeds=0] [rows=NAME,NAME] [reuse=...] [threads=N]

Rows come from conf/quality.yaml. Drives the CLI like scripts/table1.py: train, then embed ->
evaluate through landmark_ae/chain.py (as `train evaluate=true` does), reading `key<TAB>value`
stdout. Without data_dir= it runs `prepare` first with the data overrides. queries=val scores val
images against train (for choosing settings); the default, test, is the protocol. Writes quality.md and quality.csv to a new
outputs/quality/<timestamp>/ and prints `key<TAB>value` lines (run_dir first).

protocol=unseen: retrieval among landmarks the model never saw. Each row of conf/quality.yaml's
`unseen.rows` is trained on the landmarks below `split` (a prepare run with
data.landmark_max=<split>, or seen_dir=), embedded with `landmark-ae embed train_run=<run>
data_dir=<the landmarks from split on>` (data.landmark_min=<split>, or unseen_dir=), and evaluated
with `queries=all`: every image of the unseen landmarks queries all the others. Beside the rows:
raw pixels on the same images, and each row's mAP@100 as a multiple of the pixels' and of the
`unseen.reference` row's (the seed's M2 trained the same way).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
from datetime import datetime
from pathlib import Path

from landmark_ae.chain import embed_and_evaluate, override_value, quote, run_step
from landmark_ae.errors import UserError

REPO = Path(__file__).resolve().parent.parent
METRICS = [("best_val_loss", "val loss"), ("nmi", "NMI"), ("ri", "RI"), ("ari", "ARI"), ("map@100", "mAP@100"),
           ("p@10", "P@10"), ("train_seconds", "train s")]


def print_results(table: list[str], out: Path, results: dict[str, list[dict]], keys: list[str]) -> None:
    """The table to stderr; the run dir and each row's mean of each metric to stdout, key<TAB>value."""
    print("\n".join(table), file=sys.stderr)
    print(f"run_dir\t{out}")
    for name, runs in results.items():
        for k in keys:
            values = [float(r[k]) for r in runs if r.get(k) not in (None, "")]
            if values:
                print(f"{name}.{k}\t{statistics.mean(values):.6f}")


def cli(command: str, *args: str) -> dict[str, str]:
    """Run `landmark-ae <command> <args>` (the chain's own step runner); the key/value lines it printed."""
    try:
        return run_step(command, list(args))
    except UserError as exc:
        sys.exit(f"quality: {exc}")


def load_experiment(path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


# The settings that make two train runs the same run; anything else (threads, progress, paths)
# does not change what is learned. Keys that older runs lack count as their defaults.
REUSE_KEYS = ("model", "objective", "epochs", "seed", "batch_size", "optimizer", "lr_schedule", "channels_last")


def train_settings(cfg) -> dict:
    from omegaconf import OmegaConf

    from landmark_ae.config import ObjectiveConfig, enum_value

    plain = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    defaults = {"objective": {k: enum_value(v) for k, v in vars(ObjectiveConfig()).items()},
                "lr_schedule": "constant", "channels_last": False}
    out = {k: plain.get(k, defaults.get(k)) for k in REUSE_KEYS}
    out["objective"] = {**defaults["objective"], **(out["objective"] or {})}
    # a description is prose, not a setting; runs older than `projector` had none
    out["model"] = {"projector": [], **{k: v for k, v in (out["model"] or {}).items() if k != "description"}}
    return out


def find_reusable(reuse: list[Path], overrides: list[str], seed: int, epochs: str,
                  data_dir: str) -> tuple[Path, list[str]] | None:
    """A complete train run under `reuse` made with exactly these settings: the same data_dir and
    the same REUSE_KEYS as `landmark-ae train <overrides> epochs=.. seed=..` composes to (so
    presets such as experiment=contrastive match the runs they made). With it, the embed overrides
    that give it the eval_embed those overrides compose to now, where the run recorded others (a
    preset whose embed settings changed since): the row is embedded as a fresh run would be."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import landmark_ae.commands  # noqa: F401 - registers the schemas and resolvers train's config uses
    from landmark_ae.config import config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        composed = compose("train", overrides=[*overrides, f"epochs={epochs}", f"seed={seed}"])
    wanted = train_settings(composed)
    eval_embed = OmegaConf.to_container(composed.eval_embed, enum_to_str=True)
    for root in reuse:
        for cfg_path in sorted(root.glob("**/.hydra/config.yaml"), reverse=True):  # newest first
            run = cfg_path.parent.parent
            record = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
            if record.get("status") != "complete" or not (run / "best.pt").is_file():
                continue
            if Path(record.get("data_dir", "/nonexistent")).resolve() != Path(data_dir).resolve():
                continue
            stored = OmegaConf.load(cfg_path)
            if train_settings(stored) == wanted:
                had = OmegaConf.to_container(stored.get("eval_embed") or {}, enum_to_str=True)
                return run, [f"{k}={override_value(v)}" for k, v in eval_embed.items() if had.get(k) != v]
    return None


def reused(found: tuple[Path, list[str]], name: str, seed: int) -> dict:
    """A reused train run as `cli("train", ...)` would report it, plus the embed overrides it needs."""
    run, preset_embed = found
    note = f" (embedded with the preset's eval_embed of now: {' '.join(preset_embed)})" if preset_embed else ""
    print(f"quality: reusing {run} for {name} seed {seed}{note}", file=sys.stderr)
    best = json.loads((run / "run.json").read_text()).get("best_val_loss")
    return {"run_dir": str(run), "best_val_loss": best, "preset_embed": preset_embed}


def new_out_dir(table: str) -> Path:
    """A new outputs/quality/<run stamp>/ (LANDMARK_AE_OUTPUTS moves it), where `table` is rewritten after every row."""
    from landmark_ae.runs import RUN_STAMP_FORMAT

    out = Path(os.environ.get("LANDMARK_AE_OUTPUTS", "outputs")) / "quality" / datetime.now().strftime(RUN_STAMP_FORMAT)
    out.mkdir(parents=True)
    print(f"quality: writing {out}/{table} after every row", file=sys.stderr)
    return out


def train_once(trained: dict[tuple, dict], reuse: list[Path], row: dict, seed: int, epochs: str, data_dir: str,
               data_args: list[str], common: list[str]) -> dict:
    """The train run of `row` at this seed and epochs: one per (train overrides, epochs, seed) in
    `trained`, taken from `reuse` where a run matches, else trained; with its summed epoch seconds."""
    key = (tuple(row["train"]), epochs, seed)
    if key not in trained:
        found = find_reusable(reuse, row["train"], seed, epochs, data_dir) if reuse else None
        if found is not None:
            res = reused(found, row["name"], seed)
        else:
            res = cli("train", *data_args, f"data_dir={data_dir}", *row["train"], f"epochs={epochs}",
                      f"seed={seed}", "progress=false", *common)
        with open(Path(res["run_dir"]) / "history.csv") as f:
            seconds = sum(float(r["seconds"]) for r in csv.DictReader(f))
        trained[key] = {**res, "train_seconds": seconds}
    return trained[key]


def pixel_pca_row(embed_run: Path, dims: int, queries: str) -> dict:
    """evaluate's raw-pixel baseline (at the embedding's own size), PCA-whitened to `dims` on train+val,
    L2: no learning."""
    from landmark_ae.retrieval.baseline import pixel_baseline
    from landmark_ae.retrieval.embed_run import EmbedRun
    from landmark_ae.retrieval.metrics import evaluate_embeddings
    from landmark_ae.retrieval.postprocess import Transform

    run = EmbedRun(embed_run)
    _, x = pixel_baseline(run)
    db = run.rows("train", "val")
    x = Transform.fit(x[db], l2=True, pca_whiten=min(dims, len(db) - 1, x.shape[1])).apply(x)
    train, query, database = run.protocol(queries)
    return evaluate_embeddings(x[train], run.labels[train], x[query], run.labels[query], x[database],
                               run.labels[database], seed=0, n_init=10, k=100)


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}" if abs(values[0]) < 10 else f"{values[0]:.0f}"
    m, s = statistics.mean(values), statistics.stdev(values)
    return f"{m:.3f} ± {s:.3f}" if abs(m) < 10 else f"{m:.0f} ± {s:.0f}"


def write_table(out: Path, results: dict, pixels: dict | None, opts: dict, epochs: str, queries: str, data_dir: str,
                seeds: list[int], exp: dict) -> list[str]:
    """quality.csv and quality.md from the rows so far (rewritten after every row)."""
    results = dict(results)
    if pixels is not None:
        results[pixels["name"]] = [{k: v for k, v in pixels.items() if k != "name"}]

    with open(out / "quality.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "seed", "dim", *(k for k, _ in METRICS), "train_run"])
        for name, runs in results.items():
            for r in runs:
                writer.writerow([name, r.get("seed", ""), r.get("dim", ""), *(r.get(k, "") for k, _ in METRICS),
                                 r.get("train_run", "")])
    retrieval = "val queries vs train" if queries == "val" else "test queries vs train+val"
    lines = [
        f"# Quality — {opts.get('data', 'synthetic')}, {epochs} epochs, {retrieval}",
        "",
        f"Prepared dataset: `{data_dir}`. k-means (k = landmarks) on train embeddings. "
        f"Headline rows: mean ± std over seeds {seeds}; other rows: seed {exp['default_seed']}. "
        "train s: training seconds (sum of epochs) on this machine.",
        "",
        "| embedding | dim | epochs | seeds | " + " | ".join(label for _, label in METRICS) + " |",
        "|---|---|---|---|" + "---|" * len(METRICS),
    ]
    for name, runs in results.items():
        cells = [mean_std([float(r[k]) for r in runs if r.get(k) not in (None, "")]) for k, _ in METRICS]
        lines.append(f"| {name} | {runs[0].get('dim', '')} | {runs[0].get('epochs', '–')} | {len(runs)} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    (out / "quality.md").write_text("\n".join(lines))
    return lines


def unseen(opts: dict, exp: dict) -> None:
    """protocol=unseen (see the module's docstring): quality_unseen.md/.csv in a new outputs/quality/<timestamp>/."""
    spec = exp["unseen"]
    split = int(opts.get("split", spec.get("split", 5)))
    data_args = [f"{k}={v}" for k, v in opts.items() if k == "data" or k.startswith("data.")]
    common = [f"{k}={opts[k]}" for k in ("threads", "device", "batch_size") if k in opts]
    seeds = [int(s) for s in opts.get("seeds", ",".join(map(str, spec.get("seeds", [0])))).split(",")]
    rows = spec["rows"]
    if "rows" in opts:
        wanted = opts["rows"].split(",")
        unknown = sorted(set(wanted) - {r["name"] for r in rows})
        if unknown:
            sys.exit(f"quality: no unseen row named {', '.join(map(repr, unknown))}; rows: "
                     f"{', '.join(r['name'] for r in rows)}")
        rows = [r for r in rows if r["name"] in wanted]
    seen_dir = opts.get("seen_dir") or cli("prepare", *data_args, f"data.landmark_max={split}", "progress=false")["run_dir"]
    unseen_dir = opts.get("unseen_dir") or cli("prepare", *data_args, f"data.landmark_min={split}",
                                               "progress=false")["run_dir"]
    reuse = [Path(p) for p in opts["reuse"].split(",")] if opts.get("reuse") else []
    out = new_out_dir("quality_unseen.md")
    trained: dict[tuple, dict] = {}
    results: dict[str, list[dict]] = {}
    pixels: dict[str, dict] = {}  # raw pixels at each row's embedding size (M5: 8x8, M2: 23x23)
    columns = [("nmi", "NMI"), ("ari", "ARI"), ("map@100", "mAP@100"), ("p@10", "P@10"), ("train_seconds", "train s")]

    def write() -> list[str]:
        table = {**results, **{name: [values] for name, values in pixels.items()}}
        # ×pixels: against the best of the pixel baselines (the stricter comparison)
        base = max((v["map@100"] for v in pixels.values()), default=None)
        ref_runs = results.get(spec.get("reference", ""), [])
        ref = statistics.mean([r["map@100"] for r in ref_runs]) if ref_runs else None
        with open(out / "quality_unseen.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "seed", "dim", *(k for k, _ in columns), "train_run", "embed_run"])
            for name, runs in table.items():
                for r in runs:
                    writer.writerow([name, r.get("seed", ""), r.get("dim", ""), *(r.get(k, "") for k, _ in columns),
                                     r.get("train_run", ""), r.get("embed_run", "")])
        lines = [
            f"# Unseen landmarks — trained on landmarks < {split}, retrieval among landmarks >= {split}",
            "",
            f"Trained on `{seen_dir}`; embedded and evaluated on `{unseen_dir}` (`evaluate queries=all`: every image "
            "queries all the others; k-means with k = landmarks on all of them). Rows: mean ± std over seeds "
            f"{seeds}. ×pixels, ×ref: mAP@100 over the best raw-pixel row's and over the `{spec.get('reference')}` "
            "row's. Raw pixels get no post-processing.",
            "",
            "| embedding | dim | seeds | " + " | ".join(label for _, label in columns) + " | ×pixels | ×ref |",
            "|---|---|---|" + "---|" * (len(columns) + 2),
        ]
        for name, runs in table.items():
            cells = [mean_std([float(r[k]) for r in runs if r.get(k) not in (None, "")]) for k, _ in columns]
            m = statistics.mean([r["map@100"] for r in runs])
            ratios = [f"{m / b:.2f}" if b else "–" for b in (base, ref)]
            lines.append(f"| {name} | {runs[0].get('dim', '')} | {len(runs)} | " + " | ".join(cells + ratios) + " |")
        lines.append("")
        (out / "quality_unseen.md").write_text("\n".join(lines))
        return lines

    lines: list[str] = []
    for row in rows:
        epochs = str(row.get("epochs", exp["epochs"]))
        for seed in seeds:
            train = train_once(trained, reuse, row, seed, epochs, seen_dir, data_args, common)
            try:
                evaluation = embed_and_evaluate(
                    train["run_dir"], queries="all", evaluate=[f"pixel_baseline={'true' if seed == seeds[0] else 'false'}"],
                    embed=[f"data_dir={quote(unseen_dir)}", *train.get("preset_embed", []), *row.get("embed", []),
                           *[c for c in common if c.startswith("device")]])
            except UserError as exc:
                sys.exit(f"quality: {exc}")
            metrics = evaluation.evaluation
            model = metrics["results"][metrics["model"]]
            results.setdefault(row["name"], []).append({
                **model, "seed": seed, "train_seconds": train["train_seconds"], "train_run": train["run_dir"],
                "embed_run": str(evaluation.embed_run)})
            for name, values in metrics["results"].items():
                if name.startswith("pixels_"):
                    pixels.setdefault(f"raw pixels {name.removeprefix('pixels_')}", values)
            lines = write()
    print_results(lines, out, results, [k for k, _ in columns])
    for name, values in pixels.items():
        print(f"{name}.map@100\t{values['map@100']:.6f}")


def main(argv: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    exp = load_experiment(Path(opts.get("experiment", REPO / "conf" / "quality.yaml")))
    if opts.get("protocol", "seed") == "unseen":
        unseen(opts, exp)
        return
    data_args = [f"{k}={v}" for k, v in opts.items() if k == "data" or k.startswith("data.")]
    epochs = opts.get("epochs", str(exp["epochs"]))
    seeds = [int(s) for s in opts.get("seeds", ",".join(map(str, exp["seeds"]))).split(",")]
    queries = opts.get("queries", "test")
    common = [f"{k}={opts[k]}" for k in ("threads", "device", "batch_size") if k in opts]
    rows = exp["rows"]
    if "rows" in opts:
        wanted = opts["rows"].split(",")
        unknown = sorted(set(wanted) - {r["name"] for r in rows})
        if unknown:
            sys.exit(f"quality: no row named {', '.join(map(repr, unknown))}; rows: {', '.join(r['name'] for r in rows)}")
        rows = [r for r in rows if r["name"] in wanted]
    if opts.get("headline_only") == "true":
        rows = [r for r in rows if r.get("headline")]
    data_dir = opts.get("data_dir") or cli("prepare", *data_args, "progress=false")["run_dir"]
    # reuse=<dir>[,<dir>]: take finished train runs with identical settings from there (e.g. a
    # `make table1` run on the same data_dir) instead of training them again.
    reuse = [Path(p) for p in opts["reuse"].split(",")] if opts.get("reuse") else []

    out = new_out_dir("quality.md")
    trained: dict[tuple, dict] = {}  # (train overrides, seed) -> train results
    results: dict[str, list[dict]] = {}
    pixels: dict | None = None
    last_embed: Path | None = None
    for row in rows:
        row_seeds = seeds if row.get("headline") else [int(row.get("seed", exp["default_seed"]))]
        row_epochs = str(row.get("epochs", epochs))  # a row may fix its own (e.g. a time budget)
        for seed in row_seeds:
            train = train_once(trained, reuse, row, seed, row_epochs, data_dir, data_args, common)
            baseline = "true" if pixels is None and row["train"] == ["model=m2"] else "false"
            try:
                evaluation = embed_and_evaluate(
                    train["run_dir"], queries=queries, evaluate=[f"pixel_baseline={baseline}"],
                    embed=[*train.get("preset_embed", []), *row.get("embed", []),
                           *[c for c in common if c.startswith("device")]])
            except UserError as exc:
                sys.exit(f"quality: {exc}")
            last_embed = evaluation.embed_run
            metrics = evaluation.evaluation
            model = metrics["model"]
            results.setdefault(row["name"], []).append({
                **metrics["results"][model], "best_val_loss": float(train["best_val_loss"]),
                "train_seconds": train["train_seconds"], "seed": seed, "epochs": row_epochs,
                "dim": metrics["results"][model]["dim"],
                "train_run": train["run_dir"], "evaluate_run": str(evaluation.evaluate_run),
            })
            base = {k: v for k, v in metrics["results"].items() if k.startswith("pixels_")}
            if base and pixels is None:
                name, values = next(iter(base.items()))
                pixels = {"name": f"raw pixels {name.removeprefix('pixels_')}", **values}
        write_table(out, results, pixels, opts, epochs, queries, data_dir, seeds, exp)
    if last_embed is not None and exp.get("pixel_pca"):
        results[f"PCA-{exp['pixel_pca']} of pixels (+L2)"] = [
            {**pixel_pca_row(last_embed, int(exp["pixel_pca"]), queries), "dim": int(exp["pixel_pca"])}]
    lines = write_table(out, results, pixels, opts, epochs, queries, data_dir, seeds, exp)
    if pixels is not None:
        results[pixels["name"]] = [pixels]
    print_results(lines, out, results, [k for k, _ in METRICS])


if __name__ == "__main__":
    main(sys.argv[1:])
