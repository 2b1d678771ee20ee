"""`landmark-ae evaluate`: how well an embed run clusters and retrieves, beside raw pixels.

Clustering (the seed's protocol): k-means on the train embeddings with k = number of train
landmarks; NMI and RI (the seed's), plus ARI and AMI (RI sits near 1 whenever there are many
landmarks), each the mean ± std over kmeans_seeds k-means runs (seeds seed, seed+1, ...).
Retrieval: every test image queries the train+val database; mAP@100 as GLDv2 defines it, P@1, P@10,
recall@100. The raw-pixel baseline uses the same split in the same run.
queries=val: val images query train (choosing settings); queries=all: every image queries all the
others, clustering on all (a collection the model was not trained on). The model's rows go through
the embed run's DBA and αQE as `query` applies them; the raw pixels through none.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from landmark_ae.common import SPLITS
from landmark_ae.config import enum_value
from landmark_ae.errors import UserError
from landmark_ae.retrieval.embed_run import EMBED_SETTINGS, EmbedRun, resolve_embed_run
from landmark_ae.retrieval.index import Index, build
from landmark_ae.retrieval.metrics import CLUSTERING_METRICS, evaluate_embeddings
from landmark_ae.runs import atomic_path, write_json_atomic, write_run_record

log = logging.getLogger(__name__)

# Shown in this order, in the table and on stdout.
METRICS = [*CLUSTERING_METRICS, "map@{k}", "p@1", "p@10", "recall@{k}"]
SPREAD = [f"{m}_std" for m in CLUSTERING_METRICS]  # each clustering mean's std over the k-means seeds


def score(x: np.ndarray, run: EmbedRun, cfg: DictConfig, stored_index: bool = False,
          return_ap: bool = False) -> dict[str, Any]:
    """Clustering and retrieval scores of the rows `x` (one per index row) under cfg.queries.
    stored_index: x are the run's own rows, scored as `query` searches them: the database after the
    run's DBA (database.npy where the protocol's database is the run's own, queries=test; recomputed
    over the protocol's database otherwise), clustered there too, searched through its index.faiss
    (or an on-the-fly FAISS flat index for another database) with its αQE and diffusion (its stored
    graph, or one built over the protocol's database). Otherwise (raw
    pixels) the numpy exact search of x as it is. queries=all leaves each query itself out of its
    results. return_ap: also "ap", each query row's AP@k (NaN without relevant images)."""
    queries = enum_value(cfg.queries)
    train, query, database = run.protocol(queries)
    if len(train) == 0 or len(query) == 0:
        raise UserError(f"{run.run_dir}: needs train and {queries} images to evaluate "
                        f"({len(train)} train, {len(query)} {queries})")
    labels = run.labels
    # Clustering rows are database rows in every protocol: k-means sees them as the database is searched.
    in_db = np.searchsorted(database, train)
    exclude = np.searchsorted(database, query) if queries == "all" else None
    index = None
    if stored_index:
        db = run.augment(database)
        stored = np.array_equal(database, run.database())
        if run.index_name != "exact":
            index = run.index(db, expand=False) if stored else build(db, {"name": "flat"}, l2=bool(run.meta["l2"]))
        if run.qe_k or run.diffusion_k:
            index = run.diffuse(run.expand(index if index is not None else Index(db), db), db, stored)
    else:
        db = x[database]
    return evaluate_embeddings(db[in_db], labels[train], x[query], labels[query], db, labels[database],
                               seed=cfg.seed, n_init=cfg.n_init, k=cfg.k, kmeans=enum_value(cfg.kmeans),
                               index=index, return_ap=return_ap, exclude=exclude, kmeans_seeds=cfg.kmeans_seeds)


RETRIEVAL = {"val": "val vs train", "all": "each image vs all the others", "test": "test vs train+val"}


def seeds_note(n_seeds: int) -> str:
    """What the clustering figures are: "mean ± std (5 k-means seeds)", or one run's."""
    return f"mean ± std ({n_seeds} k-means seeds)" if n_seeds > 1 else "1 k-means seed"


def metric_cell(r: dict[str, Any], metric: str) -> str:
    """A clustering metric as "mean ± std" where it ran over several k-means seeds; else the value."""
    if metric in CLUSTERING_METRICS and r.get("kmeans_seeds", 1) > 1:
        return f"{r[metric]:.4f} ± {r[f'{metric}_std']:.4f}"
    return f"{r[metric]:.4f}"


def print_table(results: dict[str, dict[str, Any]], k: int, retrieval: str = "test vs train+val") -> None:
    from rich.table import Table

    from landmark_ae.ui import console

    clustering = "all" if retrieval == RETRIEVAL["all"] else "train"
    n_seeds = max((int(r.get("kmeans_seeds", 1)) for r in results.values()), default=1)
    table = Table(title=f"evaluation (clustering: {clustering}, {seeds_note(n_seeds)}; retrieval: {retrieval})")
    table.add_column("embedding")
    table.add_column("dim", justify="right")
    for m in METRICS:
        table.add_column(m.format(k=k), justify="right")
    for name, r in results.items():
        table.add_row(name, str(r["dim"]), *(metric_cell(r, m.format(k=k)) for m in METRICS))
    console.print(table)


def per_landmark_ap(query_labels: np.ndarray, ap: np.ndarray, names: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """Mean AP@k per landmark of the queries that have relevant images, best first: landmark_id,
    name (the class name, "" where the dataset names none), n_queries, ap. Their mean weighted by
    n_queries is the model's mAP@k."""
    names = names or {}
    valid = ~np.isnan(ap)
    landmarks, inverse, counts = np.unique(query_labels[valid], return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=ap[valid], minlength=landmarks.size) / np.maximum(counts, 1)
    order = sorted(range(landmarks.size), key=lambda i: (-means[i], int(landmarks[i])))
    return [{"landmark_id": int(landmarks[i]), "name": names.get(int(landmarks[i]), ""), "n_queries": int(counts[i]),
             "ap": float(means[i])} for i in order]


PER_LANDMARK_COLUMNS = ["landmark_id", "name", "n_queries", "ap"]


def write_per_landmark_table(per_landmark: list[dict[str, Any]], path: Path) -> None:
    """per_landmark_ap.csv: the figure's numbers as a table, best first."""
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=PER_LANDMARK_COLUMNS)
        writer.writeheader()
        writer.writerows({**r, "ap": f"{r['ap']:.6f}"} for r in per_landmark)


MAP_SAMPLE = 5000  # database rows drawn in embedding_map.png (and at most a fifth of that many queries)


def write_figures(x: np.ndarray, run: EmbedRun, cfg: DictConfig, per_landmark: list[dict[str, Any]],
                  run_dir: Path) -> list[str]:
    """embedding_map.png (a 2-D PCA of a sample of the database rows, queries marked) and
    per_landmark_ap.png in run_dir; returns their names."""
    from sklearn.decomposition import PCA

    from landmark_ae.figures import plot_embedding_map, plot_per_landmark_ap

    queries = enum_value(cfg.queries)
    _, query, database = run.protocol(queries)
    rng = np.random.default_rng(cfg.seed)
    db_rows = np.sort(rng.choice(database, MAP_SAMPLE, replace=False)) if len(database) > MAP_SAMPLE else database
    q_rows = np.sort(rng.choice(query, MAP_SAMPLE // 5, replace=False)) if len(query) > MAP_SAMPLE // 5 else query
    fit = np.asarray(x[db_rows], dtype=np.float64)
    n_components = min(2, fit.shape[0], fit.shape[1])
    pca = PCA(n_components=n_components, random_state=cfg.seed).fit(fit)

    def project(rows: np.ndarray) -> np.ndarray:
        points = pca.transform(np.asarray(x[rows], dtype=np.float64)) if len(rows) else np.zeros((0, n_components))
        return np.pad(points, ((0, 0), (0, 2 - n_components)))  # a 1-D embedding: on the x axis

    where = RETRIEVAL[queries]
    model = run.meta["model"]
    plot_embedding_map(project(db_rows), run.labels[db_rows], project(q_rows), run.labels[q_rows],
                       run_dir / "embedding_map.png",
                       title=f"{model}: PCA of {len(db_rows)} database rows ({where}); x: queries")
    k = cfg.k
    plot_per_landmark_ap([r.get("name") or str(r["landmark_id"]) for r in per_landmark], [r["ap"] for r in per_landmark],
                         run_dir / "per_landmark_ap.png",
                         title=f"{model}: mean AP@{k} per landmark of the queries ({where})", k=k)
    return ["embedding_map.png", "per_landmark_ap.png"]


def run_evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    run = resolve_embed_run(cfg.embed_run, cfg.paths.output_dir)
    if not run.labelled:
        if run.meta.get("images") or not run.meta.get("data_dir"):
            what = f"images={run.meta['images']}" if run.meta.get("images") else "a collection"
            raise UserError(f"{run.run_dir} embeds {what}, which holds no landmark labels: evaluate needs a labelled "
                            "dataset, e.g. embed data_dir=<prepare run>")
        raise UserError(f"{run.run_dir} embeds {run.meta['data_dir']}, prepared without labels (data.labels=none): "
                        "evaluate needs labels (query and serve do not); prepare with data.labels=folders or csv")
    write_run_record(run_dir, "evaluate", "running", embed_run=str(run.run_dir), model=run.meta["model"])
    results: dict[str, dict[str, Any]] = {}
    tick = time.perf_counter()
    x = np.asarray(run.embeddings, dtype=np.float32)
    scores = score(x, run, cfg, stored_index=True, return_ap=True)
    ap = scores.pop("ap")
    results[run.meta["model"]] = {"dim": int(x.shape[1]), **scores}
    log.info("scored %s embeddings in %.1fs", run.meta["model"], time.perf_counter() - tick)
    if cfg.pixel_baseline:
        from landmark_ae.retrieval.baseline import pixel_baseline  # torch: imported only for the baseline

        name, pixels = pixel_baseline(run)
        results[name] = {"dim": int(pixels.shape[1]), **score(pixels, run, cfg)}

    queries = enum_value(cfg.queries)
    print_table(results, cfg.k, RETRIEVAL[queries])
    counts = {s: int(len(run.rows(s))) for s in SPLITS}
    metrics = {
        "embed_run": str(run.run_dir.resolve()),
        "train_run": run.meta["train_run"],
        "model": run.meta["model"],
        "data": run.meta["data"],
        "trained_on": run.meta.get("trained_on", run.meta["data"]),
        "counts": counts,
        "settings": {"seed": cfg.seed, "n_init": cfg.n_init, "kmeans_seeds": cfg.kmeans_seeds, "k": cfg.k,
                     "queries": queries,
                     "kmeans": enum_value(cfg.kmeans), "index": run.index_name},
        "postprocess": {key: run.meta.get(key, 0) for key in (*EMBED_SETTINGS, "raw_dim")},
        "results": results,
        "per_landmark_ap": per_landmark_ap(run.labels[run.protocol(queries)[1]], ap, run.class_names),
    }
    metrics["figures"] = write_figures(x, run, cfg, metrics["per_landmark_ap"], run_dir)
    write_per_landmark_table(metrics["per_landmark_ap"], run_dir / "per_landmark_ap.csv")
    write_json_atomic(run_dir / "metrics.json", metrics)
    write_run_record(run_dir, "evaluate", "complete", embed_run=str(run.run_dir), model=run.meta["model"])
    out: dict[str, Any] = {"run_dir": run_dir}
    for name, r in results.items():
        kind = "model" if name == run.meta["model"] else "pixels"
        out[f"{kind}.name"] = name
        for m in ["dim", *METRICS, *SPREAD, "kmeans_seeds", "n_clusters", "n_queries", "n_queries_without_relevant"]:
            value = r[m.format(k=cfg.k)]
            out[f"{kind}.{m.format(k=cfg.k)}"] = f"{value:.6f}" if isinstance(value, float) and not math.isnan(value) else value
    from landmark_ae.report import write_report_quietly

    out.update(write_report_quietly(run_dir))  # report.html beside metrics.json: ~0.5 s on top
    return out
