"""The quality comparison: seed models vs the new ones on one split, one table (mean ± std over seeds).

    python scripts/quality.py data=landmarks10 data_dir=<prepare run> [epochs=20] [seeds=0,1,2]
        [queries=test|val] [threads=N] [device=auto] [rows=NAME,NAME] [headline_only=true]
        [reuse=<outputs/train dir>] [experiment=conf/quality.yaml]
    python scripts/quality.py protocol=unseen data=landmarks10 data.root=<landmarks10> [seen_dir=<prepare run>]
        [unseen_dir=<prepare run>] [split=5] [seeds=0] [rows=NAME,NAME] [reuse=...] [threads=N]

Rows come from conf/quality.yaml (read against the Experiment schema below). Arguments are
composed against QualityArgs: a misspelt key gets a did-you-mean, exit 2. Drives the CLI like
scripts/table1.py: train, then embed -> evaluate through landmark_ae/chain.py (as `train
evaluate=true` does), each step read back from its run dir. Without data_dir= it runs `prepare`
first with the data overrides. queries=val scores val images against train (for choosing
settings); the default, test, is the protocol. Writes quality.md and quality.csv to a new
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
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Optional

from omegaconf import MISSING

from landmark_ae.chain import Evaluation, embed_and_evaluate, override_value, quote, run_step
from landmark_ae.common import RUN_STAMP_FORMAT, default_output_dir
from landmark_ae.errors import UserError
from landmark_ae.runs import atomic_path, write_text_atomic
from landmark_ae.script_config import load_yaml, parse_args, run_script

REPO = Path(__file__).resolve().parent.parent
METRICS = [("best_val_loss", "val loss"), ("nmi", "NMI"), ("ri", "RI"), ("ari", "ARI"), ("map@100", "mAP@100"),
           ("p@10", "P@10"), ("train_seconds", "train s")]
UNSEEN_COLUMNS = [("nmi", "NMI"), ("ari", "ARI"), ("map@100", "mAP@100"), ("p@10", "P@10"), ("train_seconds", "train s")]


class Protocol(Enum):
    seed = "seed"
    unseen = "unseen"


class Queries(Enum):
    test = "test"
    val = "val"


@dataclass
class QualityArgs:
    """The script's arguments (both protocols; see the module's docstring)."""

    protocol: Protocol = Protocol.seed
    experiment: str = str(REPO / "conf" / "quality.yaml")
    data_dir: Optional[str] = None  # a prepare run; default: run prepare with the data overrides
    epochs: Optional[int] = None  # default: the experiment's (a row's own epochs win)
    seeds: Optional[list[int]] = None  # default: the experiment's (unseen: unseen.seeds)
    queries: Queries = Queries.test
    rows: Optional[list[str]] = None  # row names to run, in the experiment's order
    headline_only: bool = False
    reuse: Optional[list[str]] = None  # train dirs to take finished runs with identical settings from
    threads: Optional[int] = None
    device: Optional[str] = None
    batch_size: Optional[int] = None
    split: Optional[int] = None  # unseen: train on landmarks below it (default: unseen.split)
    seen_dir: Optional[str] = None  # unseen: the prepare run of the landmarks below split
    unseen_dir: Optional[str] = None  # unseen: the prepare run of the others


@dataclass
class Row:
    """One row of conf/quality.yaml: how it is trained and embedded."""

    name: str = MISSING
    train: list[str] = field(default_factory=list)
    embed: list[str] = field(default_factory=list)
    epochs: Optional[int] = None
    seed: Optional[int] = None
    headline: bool = False


@dataclass
class Unseen:
    split: int = 5
    seeds: list[int] = field(default_factory=lambda: [0])
    reference: Optional[str] = None
    rows: list[Row] = field(default_factory=list)


@dataclass
class Experiment:
    """conf/quality.yaml's schema."""

    epochs: int = 20
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    default_seed: int = 42
    pixel_pca: Optional[int] = None
    rows: list[Row] = field(default_factory=list)
    unseen: Unseen = field(default_factory=Unseen)


@dataclass
class Plan:
    """What both protocols take from the arguments and the experiment, resolved once."""

    data_args: list[str]  # data=..., data.*=... for prepare and train
    common: list[str]  # threads=, device=, batch_size= for train (device= for embed too)
    seeds: list[int]
    rows: list[Row]
    reuse: list[Path]

    @property
    def data(self) -> str:
        return next((a.split("=", 1)[1] for a in self.data_args if a.startswith("data=")), "synthetic")

    @property
    def device(self) -> list[str]:
        return [c for c in self.common if c.startswith("device")]


def plan(args: QualityArgs, exp: Experiment, data_args: list[str]) -> Plan:
    unseen = args.protocol is Protocol.unseen
    rows = exp.unseen.rows if unseen else exp.rows
    if args.rows is not None:
        unknown = sorted(set(args.rows) - {r.name for r in rows})
        if unknown:
            sys.exit(f"quality: no {'unseen ' if unseen else ''}row named {', '.join(map(repr, unknown))}; rows: "
                     f"{', '.join(r.name for r in rows)}")
        rows = [r for r in rows if r.name in args.rows]
    if args.headline_only and not unseen:
        rows = [r for r in rows if r.headline]
    common = [f"{k}={getattr(args, k)}" for k in ("threads", "device", "batch_size") if getattr(args, k) is not None]
    seeds = args.seeds or (exp.unseen.seeds if unseen else exp.seeds)
    # reuse=<dir>[,<dir>]: take finished train runs with identical settings from there (e.g. a
    # `make table1` run on the same data_dir) instead of training them again.
    return Plan(data_args, common, list(seeds), rows, [Path(p) for p in args.reuse or []])
def print_results(table: list[str], out: Path, results: dict[str, list[dict]], keys: list[str]) -> None:
    """The table to stderr; the run dir and each row's mean of each metric to stdout, key<TAB>value."""
    print("\n".join(table), file=sys.stderr)
    print(f"run_dir\t{out}")
    for name, runs in results.items():
        for k in keys:
            values = [float(r[k]) for r in runs if r.get(k) not in (None, "")]
            if values:
                print(f"{name}.{k}\t{statistics.mean(values):.6f}")


def cli(command: str, *args: str) -> dict:
    """Run `landmark-ae <command> <args>` (the chain's own step runner); its run.json record and run_dir."""
    try:
        return run_step(command, list(args))
    except UserError as exc:
        sys.exit(f"quality: {exc}")


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
    from landmark_ae.runs import RUN_RECORD, Run

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        composed = compose("train", overrides=[*overrides, f"epochs={epochs}", f"seed={seed}"])
    wanted = train_settings(composed)
    eval_embed = OmegaConf.to_container(composed.eval_embed, enum_to_str=True)
    for root in reuse:
        for run in sorted((Run(p.parent) for p in root.glob(f"**/{RUN_RECORD}")), key=lambda r: str(r.path),
                          reverse=True):  # newest first
            record = run.record or {}
            if record.get("status") != "complete" or not (run.path / "best.pt").is_file() or not run.config:
                continue
            if Path(record.get("data_dir", "/nonexistent")).resolve() != Path(data_dir).resolve():
                continue
            stored = OmegaConf.create(run.config)  # the effective config: a resume's settings where it was resumed
            if train_settings(stored) == wanted:
                had = OmegaConf.to_container(stored.get("eval_embed") or {}, enum_to_str=True)
                return run.path, [f"{k}={override_value(v)}" for k, v in eval_embed.items() if had.get(k) != v]
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
    out = Path(default_output_dir()) / "quality" / datetime.now().strftime(RUN_STAMP_FORMAT)
    out.mkdir(parents=True)
    print(f"quality: writing {out}/{table} after every row", file=sys.stderr)
    return out


def train_once(trained: dict[tuple, dict], plan: Plan, row: Row, seed: int, epochs: str, data_dir: str) -> dict:
    """The train run of `row` at this seed and epochs: one per (train overrides, epochs, seed) in
    `trained`, taken from `reuse` where a run matches, else trained; with its summed epoch seconds."""
    key = (tuple(row.train), epochs, seed)
    if key not in trained:
        found = find_reusable(plan.reuse, row.train, seed, epochs, data_dir) if plan.reuse else None
        if found is not None:
            res = reused(found, row.name, seed)
        else:
            res = cli("train", *plan.data_args, f"data_dir={data_dir}", *row.train, f"epochs={epochs}",
                      f"seed={seed}", "progress=false", *plan.common)
        with open(Path(res["run_dir"]) / "history.csv") as f:
            seconds = sum(float(r["seconds"]) for r in csv.DictReader(f))
        trained[key] = {**res, "train_seconds": seconds}
    return trained[key]


def pixel_pca_row(embed_run: Path, dims: int, queries: str) -> dict:
    """evaluate's raw-pixel baseline (at the embedding's own size), PCA-whitened to `dims` on train+val,
    L2: no learning."""
    from landmark_ae.config import EvaluateConfig, enum_value
    from landmark_ae.retrieval.baseline import pixel_baseline
    from landmark_ae.retrieval.embed_run import EmbedRun
    from landmark_ae.retrieval.metrics import evaluate_embeddings
    from landmark_ae.retrieval.postprocess import Transform

    run = EmbedRun(embed_run)
    _, x = pixel_baseline(run)
    db = run.rows("train", "val")
    x = Transform.fit(x[db], l2=True, pca_whiten=min(dims, len(db) - 1, x.shape[1])).apply(x)
    train, query, database = run.protocol(queries)
    defaults = EvaluateConfig()  # k-means as evaluate's defaults run it: its other rows' clustering means
    return evaluate_embeddings(x[train], run.labels[train], x[query], run.labels[query], x[database],
                               run.labels[database], seed=defaults.seed, n_init=defaults.n_init, k=100,
                               kmeans=enum_value(defaults.kmeans), kmeans_seeds=defaults.kmeans_seeds)


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}" if abs(values[0]) < 10 else f"{values[0]:.0f}"
    m, s = statistics.mean(values), statistics.stdev(values)
    return f"{m:.3f} ± {s:.3f}" if abs(m) < 10 else f"{m:.0f} ± {s:.0f}"


def write_table(out: Path, results: dict, pixels: dict | None, plan: Plan, epochs: str, queries: str, data_dir: str,
                exp: Experiment) -> list[str]:
    """quality.csv and quality.md from the rows so far (rewritten after every row)."""
    results = dict(results)
    if pixels is not None:
        results[pixels["name"]] = [{k: v for k, v in pixels.items() if k != "name"}]

    with atomic_path(out / "quality.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "seed", "dim", *(k for k, _ in METRICS), "train_run"])
        for name, runs in results.items():
            for r in runs:
                writer.writerow([name, r.get("seed", ""), r.get("dim", ""), *(r.get(k, "") for k, _ in METRICS),
                                 r.get("train_run", "")])
    retrieval = "val queries vs train" if queries == "val" else "test queries vs train+val"
    lines = [
        f"# Quality — {plan.data}, {epochs} epochs, {retrieval}",
        "",
        f"Prepared dataset: `{data_dir}`. k-means (k = landmarks) on train embeddings; each run's NMI/RI/ARI: "
        "its mean over evaluate's k-means seeds (kmeans_seeds). "
        f"Headline rows: mean ± std over seeds {plan.seeds}; other rows: seed {exp.default_seed}. "
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
    write_text_atomic(out / "quality.md", "\n".join(lines))
    return lines




def evaluate_row(train: dict, row: Row, plan: Plan, queries: str, embed: list[str], evaluate: list[str]) -> Evaluation:
    """The chain on a row's train run: embed with `embed`, the preset's and the row's overrides, evaluate."""
    try:
        return embed_and_evaluate(train["run_dir"], queries=queries, evaluate=evaluate,
                                  embed=[*embed, *train.get("preset_embed", []), *row.embed, *plan.device])
    except UserError as exc:
        sys.exit(f"quality: {exc}")


def first_pixels(evaluation: Evaluation) -> dict | None:
    """The evaluate run's raw-pixel row (pixel_baseline=true), named for the table."""
    base = {k: v for k, v in evaluation.evaluation["results"].items() if k.startswith("pixels_")}
    if not base:
        return None
    name, values = next(iter(base.items()))
    return {"name": f"raw pixels {name.removeprefix('pixels_')}", **values}


def seed_protocol(args: QualityArgs, exp: Experiment, plan: Plan) -> None:
    """The default protocol: each row on one prepared split; quality.md/.csv in a new outputs/quality/<timestamp>/."""
    epochs = str(args.epochs if args.epochs is not None else exp.epochs)
    queries = args.queries.value
    data_dir = args.data_dir or cli("prepare", *plan.data_args, "progress=false")["run_dir"]
    out = new_out_dir("quality.md")
    trained: dict[tuple, dict] = {}  # (train overrides, epochs, seed) -> train results
    results: dict[str, list[dict]] = {}
    pixels: dict | None = None
    last_embed: Path | None = None
    for row in plan.rows:
        row_seeds = plan.seeds if row.headline else [row.seed if row.seed is not None else exp.default_seed]
        row_epochs = str(row.epochs if row.epochs is not None else epochs)  # a row may fix its own (a time budget)
        for seed in row_seeds:
            train = train_once(trained, plan, row, seed, row_epochs, data_dir)
            baseline = "true" if pixels is None and row.train == ["model=m2"] else "false"
            evaluation = evaluate_row(train, row, plan, queries, [], [f"pixel_baseline={baseline}"])
            last_embed = evaluation.embed_run
            metrics = evaluation.evaluation
            model = metrics["results"][metrics["model"]]
            results.setdefault(row.name, []).append({
                **model, "best_val_loss": float(train["best_val_loss"]), "train_seconds": train["train_seconds"],
                "seed": seed, "epochs": row_epochs, "dim": model["dim"], "train_run": train["run_dir"],
                "evaluate_run": str(evaluation.evaluate_run),
            })
            pixels = pixels or first_pixels(evaluation)
        write_table(out, results, pixels, plan, epochs, queries, data_dir, exp)
    if last_embed is not None and exp.pixel_pca:
        results[f"PCA-{exp.pixel_pca} of pixels (+L2)"] = [
            {**pixel_pca_row(last_embed, exp.pixel_pca, queries), "dim": exp.pixel_pca}]
    lines = write_table(out, results, pixels, plan, epochs, queries, data_dir, exp)
    if pixels is not None:
        results[pixels["name"]] = [pixels]
    print_results(lines, out, results, [k for k, _ in METRICS])


@dataclass
class UnseenSplit:
    """Where protocol=unseen trains and where it retrieves."""

    split: int
    seen_dir: str
    unseen_dir: str
    reference: Optional[str]


def write_unseen_table(out: Path, results: dict[str, list[dict]], pixels: dict[str, dict], plan: Plan,
                       where: UnseenSplit) -> list[str]:
    """quality_unseen.csv and quality_unseen.md from the rows so far (rewritten after every row)."""
    table = {**results, **{name: [values] for name, values in pixels.items()}}
    # ×pixels: against the best of the pixel baselines (the stricter comparison)
    base = max((v["map@100"] for v in pixels.values()), default=None)
    ref_runs = results.get(where.reference or "", [])
    ref = statistics.mean([r["map@100"] for r in ref_runs]) if ref_runs else None
    with atomic_path(out / "quality_unseen.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "seed", "dim", *(k for k, _ in UNSEEN_COLUMNS), "train_run", "embed_run"])
        for name, runs in table.items():
            for r in runs:
                writer.writerow([name, r.get("seed", ""), r.get("dim", ""), *(r.get(k, "") for k, _ in UNSEEN_COLUMNS),
                                 r.get("train_run", ""), r.get("embed_run", "")])
    lines = [
        f"# Unseen landmarks — trained on landmarks < {where.split}, retrieval among landmarks >= {where.split}",
        "",
        f"Trained on `{where.seen_dir}`; embedded and evaluated on `{where.unseen_dir}` (`evaluate queries=all`: every "
        "image queries all the others; k-means with k = landmarks on all of them). Rows: mean ± std over seeds "
        f"{plan.seeds}. ×pixels, ×ref: mAP@100 over the best raw-pixel row's and over the `{where.reference}` "
        "row's. Raw pixels get no post-processing.",
        "",
        "| embedding | dim | seeds | " + " | ".join(label for _, label in UNSEEN_COLUMNS) + " | ×pixels | ×ref |",
        "|---|---|---|" + "---|" * (len(UNSEEN_COLUMNS) + 2),
    ]
    for name, runs in table.items():
        cells = [mean_std([float(r[k]) for r in runs if r.get(k) not in (None, "")]) for k, _ in UNSEEN_COLUMNS]
        m = statistics.mean([r["map@100"] for r in runs])
        ratios = [f"{m / b:.2f}" if b else "–" for b in (base, ref)]
        lines.append(f"| {name} | {runs[0].get('dim', '')} | {len(runs)} | " + " | ".join(cells + ratios) + " |")
    lines.append("")
    write_text_atomic(out / "quality_unseen.md", "\n".join(lines))
    return lines


def unseen_protocol(args: QualityArgs, exp: Experiment, plan: Plan) -> None:
    """protocol=unseen (see the module's docstring): quality_unseen.md/.csv in a new outputs/quality/<timestamp>/."""
    split = args.split if args.split is not None else exp.unseen.split
    seen_dir = args.seen_dir or cli("prepare", *plan.data_args, f"data.landmark_max={split}", "progress=false")["run_dir"]
    unseen_dir = args.unseen_dir or cli("prepare", *plan.data_args, f"data.landmark_min={split}",
                                        "progress=false")["run_dir"]
    where = UnseenSplit(split, seen_dir, unseen_dir, exp.unseen.reference)
    out = new_out_dir("quality_unseen.md")
    trained: dict[tuple, dict] = {}
    results: dict[str, list[dict]] = {}
    pixels: dict[str, dict] = {}  # raw pixels at each row's embedding size (M5: 8x8, M2: 23x23)
    lines: list[str] = []
    for row in plan.rows:
        epochs = str(row.epochs if row.epochs is not None else exp.epochs)
        for seed in plan.seeds:
            train = train_once(trained, plan, row, seed, epochs, seen_dir)
            evaluation = evaluate_row(train, row, plan, "all", [f"data_dir={quote(unseen_dir)}"],
                                      [f"pixel_baseline={'true' if seed == plan.seeds[0] else 'false'}"])
            metrics = evaluation.evaluation
            results.setdefault(row.name, []).append({
                **metrics["results"][metrics["model"]], "seed": seed, "train_seconds": train["train_seconds"],
                "train_run": train["run_dir"], "embed_run": str(evaluation.embed_run)})
            for name, values in metrics["results"].items():
                if name.startswith("pixels_"):
                    pixels.setdefault(f"raw pixels {name.removeprefix('pixels_')}", values)
            lines = write_unseen_table(out, results, pixels, plan, where)
    print_results(lines, out, results, [k for k, _ in UNSEEN_COLUMNS])
    for name, values in pixels.items():
        print(f"{name}.map@100\t{values['map@100']:.6f}")


def main(argv: list[str]) -> None:
    args, data_args = parse_args(QualityArgs, argv, "quality", passthrough=("data",), doc=__doc__)
    exp = load_yaml(Experiment, args.experiment, "quality")
    protocol = unseen_protocol if args.protocol is Protocol.unseen else seed_protocol
    protocol(args, exp, plan(args, exp, data_args))


if __name__ == "__main__":
    run_script("quality", main, sys.argv[1:])
