"""`landmark-ae embed`: the encoder's bottleneck, flattened, for every image of a collection.

What is embedded, with the model of `train_run=`:
    (default)        the train run's own prepared dataset: train/val/test, labelled
    data_dir=<run>   another prepare run (train on landmarks 0-4, retrieve among 5-9): the same way
    images=<path>    any folder (recursively) or text file of image paths (collection.py): one
                     unlabelled split `database`, each image preprocessed as a query is

An embed run dir holds:
    embeddings.npy   float32 (N, D), memory-mappable; row i is index.csv's row i
    index.csv        id, landmark_id (empty when unlabelled), split, path (absolute path of the image)
    embed.json       train run, checkpoint path + sha256, model config, dataset embedded and the one
                     trained on, image sizes (input_size: the side the encoder saw), post-processing
                     (pooling, gem_p, l2, pca_whiten, whiten_shrinkage, dba_k/dba_alpha, qe_k/qe_alpha,
                     raw_dim; settings_from_train_run),
                     the index settings (`index`: name, metric, nlist/nprobe or M/efConstruction/efSearch)
    index.faiss      index=flat|ivf|hnsw: the FAISS index over the database rows (index.py); none for
                     index=exact (numpy search over embeddings.npy, or database.npy)
    database.npy     dba_k > 0: the database rows after database-side augmentation (expansion.py), in
                     database order (train+val, or the collection): what query/serve search
    transform.npz    the L2 / PCA-whitening fitted on the database rows: train+val of a prepared
                     dataset, every row of a collection (query applies it too)
    failures.csv     images= only: files that could not be used (id, path, reason, detail)

embeddings.npy holds the post-processed rows (pooling, L2, PCA-whitening): a query image gets the
same. The database is searched as it is there, or as database.npy after DBA; with qe_k > 0, query,
serve and evaluate expand each query with its first results before the final search (αQE).

Settings a train run carries (its `eval_embed`, retrieval/embed_run.train_run_embed_settings) are
embed's defaults for that run: `landmark-ae embed train_run=<run>` applies them, and keys given on
the command line win.
"""

from __future__ import annotations

import csv
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig

from landmark_ae.config import enum_value
from landmark_ae.data.prepared import SPLITS, Split, dataset_name, load_prepared, resize_uint8, to_model_range
from landmark_ae.device import pick_device
from landmark_ae.errors import UserError
from landmark_ae.model.builder import ConvAutoencoder
from landmark_ae.model.checkpoints import fingerprint, load_checkpoint, model_from_checkpoint
from landmark_ae.retrieval.collection import FAILURE_COLUMNS, Collection, decode_batches, open_collection, training_image_size
from landmark_ae.retrieval.embed_run import ARTIFACTS, DATABASE_FILE, INDEX_COLUMNS, train_run_embed_settings
from landmark_ae.retrieval.expansion import dba
from landmark_ae.retrieval.index import build
from landmark_ae.retrieval.postprocess import Transform, pool
from landmark_ae.runs import (
    atomic_path,
    check_artifacts,
    read_run_record,
    resolve_run,
    write_json_atomic,
    write_manifest,
    write_run_record,
)

log = logging.getLogger(__name__)


@torch.inference_mode()
def embed_images(
    model: ConvAutoencoder, images: np.ndarray, input_size: int, batch_size: int, device: torch.device,
    on_batch: Callable[[int], None] = lambda n: None, pooling: str = "flatten", gem_p: float = 3.0,
) -> np.ndarray:
    """uint8 (N, S, S, 3) images -> float32 (N, D) bottlenecks, pooled (default: flattened), in batches."""
    model.eval()
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        batch = to_model_range(resize_uint8(images[start : start + batch_size], input_size)).to(device)
        latent = model.embed(batch) if pooling == "flatten" else pool(model.encoder(batch), pooling, gem_p)
        out.append(latent.float().cpu().numpy())
        on_batch(len(batch))
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


@torch.inference_mode()
def check_input_size(model: ConvAutoencoder, model_cfg: dict[str, Any], input_size: int | None) -> int:
    """The side images are resized to for the encoder: input_size, or the model's training size when
    None. A size the encoder cannot take (a linear layer after its convolutions, as M4's) is a
    one-line error, found on one blank image before anything is embedded."""
    trained = int(model_cfg["input_size"])
    if input_size is None or int(input_size) == trained:
        return trained
    model.eval()
    try:
        model.embed(torch.zeros(1, 3, int(input_size), int(input_size), device=next(model.parameters()).device))
    except RuntimeError:
        raise UserError(f"input_size={input_size}: {model_cfg['name']} was trained at {trained}x{trained} and its "
                        f"encoder takes no other size; pass input_size=null (or {trained})") from None
    return int(input_size)


def resolve_train_run(cfg: DictConfig) -> Path:
    run = resolve_run(cfg.train_run, cfg.paths.output_dir, "train", "train_run",
                      "run `landmark-ae train` first, or pass train_run=<train run dir>")
    if not (run / "best.pt").is_file():
        raise UserError(f"{run} has no best.pt: it is not a finished train run (train it, or resume it with resume={run})")
    check_artifacts(run, ["best.pt"], "train the model again with `landmark-ae train`")
    return run


@dataclass
class Embedded:
    """What an embed run stores, before post-processing: raw rows and their index."""

    embeddings: np.ndarray  # (N, D) raw bottlenecks, in index order
    index_rows: list[list[Any]]  # id, landmark_id ("" when unlabelled), split, absolute path
    database: np.ndarray  # bool (N,): the rows the post-processing is fitted on
    counts: dict[str, int]
    failures: list[list[str]] = field(default_factory=list)  # images= only: [id, path, reason, detail]


def embed_prepared(splits: dict[str, Split], data_dir: Path, embed: Callable[..., np.ndarray], bar: Any,
                   description: str) -> Embedded:
    """Every train/val/test image of a prepared dataset, from its uint8 arrays (no JPEG decoded)."""
    total = sum(len(s.images) for s in splits.values())
    task = bar.add_task(description, total=total, status="")
    parts, index_rows = [], []
    for name, split in splits.items():
        parts.append(embed(split.images, lambda n: bar.update(task, advance=n)))
        for row in split.manifest.itertuples(index=False):
            index_rows.append([row.id, int(row.landmark_id), name, str((data_dir / row.path).resolve())])
    embeddings = np.concatenate([p for p in parts if p.size]) if total else np.zeros((0, 0), np.float32)
    database = np.array([r[2] in ("train", "val") for r in index_rows], dtype=bool)
    return Embedded(embeddings, index_rows, database, {name: len(s.images) for name, s in splits.items()})


def embed_collection(collection: Collection, image_size: int, batch_size: int, embed: Callable[..., np.ndarray],
                     bar: Any, description: str, run_dir: Path) -> Embedded:
    """Every readable image of a collection, decoded batch by batch; the others go to failures.csv."""
    task = bar.add_task(description, total=len(collection), status="")
    parts, index_rows, failures = [], [], []
    for positions, images, failed in decode_batches(collection, image_size, batch_size):
        if images is not None:
            parts.append(embed(images))
            index_rows.extend([collection.ids[i], "", "database", str(collection.paths[i])] for i in positions)
        failures.extend(failed)
        bar.update(task, advance=len(positions) + len(failed), status=f"{len(failures)} failed" if failures else "")
    with atomic_path(run_dir / "failures.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(FAILURE_COLUMNS)
        writer.writerows(failures)
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(Counter(f[2] for f in failures).items()))
    if not index_rows:
        raise UserError(f"images={collection.source}: none of its {len(collection)} files could be read ({reasons}; "
                        f"listed in {run_dir / 'failures.csv'})")
    if failures:
        log.warning("%d of %d files could not be used (%s): listed in %s", len(failures), len(collection), reasons,
                    run_dir / "failures.csv")
    return Embedded(np.concatenate(parts), index_rows, np.ones(len(index_rows), dtype=bool),
                    {"database": len(index_rows)}, failures)


def given_keys() -> set[str] | None:
    """The keys set on this command line (Hydra's task overrides); None outside a Hydra job (a
    config composed in code: every key counts as given)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}


def apply_train_run_settings(cfg: DictConfig, train_run: Path) -> dict[str, Any]:
    """The train run's embed settings (its eval_embed) as this run's, except the keys given on the
    command line; returns those that changed a value, logged in one line."""
    given = given_keys()
    if given is None:
        return {}
    taken = {k: v for k, v in train_run_embed_settings(train_run).items() if k not in given}
    changed = {k: v for k, v in taken.items() if enum_value(cfg[k]) != v}
    for key, value in taken.items():
        cfg[key] = value
    if changed:
        log.info("settings from train run %s (its eval_embed; keys given here win): %s", train_run,
                 " ".join(f"{k}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}"
                          for k, v in changed.items()))
    return changed


def run_embed(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from landmark_ae.ui import progress_bar

    if cfg.data_dir and cfg.images:
        raise UserError("data_dir= and images= both name what to embed: pass one of them (data_dir=<prepare run> "
                        "for a labelled dataset, images=<folder or text file of paths> for any images)")
    # A resumed embed run embeds with the checkpoint it started with, not the newest train run's,
    # and the collection it started on (recorded as an absolute path), not the newest prepare run.
    started = (read_run_record(run_dir) or {}) if cfg.resume else {}
    train_run = Path(started["train_run"]) if started.get("train_run") else resolve_train_run(cfg)
    checkpoint = train_run / "best.pt"
    sha256 = fingerprint(checkpoint) if checkpoint.is_file() else None
    if started.get("checkpoint_sha256") and sha256 != started["checkpoint_sha256"]:
        raise UserError(f"{checkpoint} changed since this embed run started: start a new embed run "
                        f"(`landmark-ae embed train_run={train_run}`)")
    from_train_run = apply_train_run_settings(cfg, train_run)
    if (cfg.dba_k or cfg.qe_k) and not cfg.l2:
        inherited = [k for k in ("dba_k", "qe_k") if k in from_train_run]
        hint = (f" ({' and '.join(inherited)} from train run {train_run}'s eval_embed: pass "
                f"{' '.join(k + '=0' for k in inherited)} to turn them off)") if inherited else ""
        raise UserError(f"dba_k={cfg.dba_k} qe_k={cfg.qe_k} need l2=true: they weigh neighbours by the cosine "
                        f"similarity of unit-length rows{hint}")
    ckpt = load_checkpoint(checkpoint)
    model_cfg = ckpt["model_config"]
    trained_dir = Path(ckpt["data_dir"])
    if started.get("images") or started.get("data_dir"):
        images, data_dir = started.get("images"), started.get("data_dir")
    else:
        images, data_dir = cfg.images, cfg.data_dir

    collection, splits = None, {}
    if images:
        collection = open_collection(images)
        image_size = training_image_size(trained_dir)
        what = {"data": collection.name, "data_dir": None, "images": str(collection.source)}
    else:
        embedded_dir = Path(data_dir).expanduser() if data_dir else trained_dir
        splits = load_prepared(embedded_dir, SPLITS)
        image_size = int(splits["train"].images.shape[1])
        embedded_dir = embedded_dir.resolve()
        own = embedded_dir == trained_dir.resolve()
        what = {"data": ckpt["data"] if own else dataset_name(embedded_dir), "data_dir": str(embedded_dir),
                "images": None}
    device = pick_device(cfg.device)
    model = model_from_checkpoint(ckpt).to(device)
    write_run_record(run_dir, "embed", "running", train_run=str(train_run), model=model_cfg["name"],
                     checkpoint_sha256=sha256, data_dir=what["data_dir"], images=what["images"])

    pooling = enum_value(cfg.pooling)
    input_size = check_input_size(model, model_cfg, cfg.input_size)

    def embed(batch: np.ndarray, on_batch: Callable[[int], None] = lambda n: None) -> np.ndarray:
        return embed_images(model, batch, input_size, cfg.batch_size, device, on_batch, pooling, cfg.gem_p)

    description = f"embed with {model_cfg['name']}"
    with progress_bar(cfg.progress) as bar:
        if collection is not None:
            part = embed_collection(collection, image_size, cfg.batch_size, embed, bar, description, run_dir)
        else:
            part = embed_prepared(splits, Path(what["data_dir"]), embed, bar, description)
    embeddings = part.embeddings
    raw_dim = int(embeddings.shape[1])
    try:
        transform = Transform.fit(embeddings[part.database], l2=cfg.l2, pca_whiten=cfg.pca_whiten,
                                  shrink=cfg.whiten_shrinkage)
    except ValueError as exc:
        raise UserError(f"pca_whiten={cfg.pca_whiten} is too large: {exc}") from None
    embeddings = transform.apply(embeddings)
    database = embeddings[part.database]
    if cfg.dba_k:  # neighbours found with the run's own kind of index over the rows as they were
        tick = time.perf_counter()
        database = dba(database, cfg.dba_k, cfg.dba_alpha, build(database, cfg.index, l2=True))
        log.info("DBA over %d database rows (k %d, alpha %g) in %.1fs", len(database), cfg.dba_k, cfg.dba_alpha,
                 time.perf_counter() - tick)
    # The database search (conf/index/): built once over the post-processed database rows.
    tick = time.perf_counter()
    index = build(database, cfg.index, l2=bool(cfg.l2))
    index_files = index.save(run_dir)
    index_meta = {**index.settings, "file": index_files[0] if index_files else None,
                  "build_s": round(time.perf_counter() - tick, 3)}

    with atomic_path(run_dir / "embeddings.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, embeddings)
    if cfg.dba_k:
        with atomic_path(run_dir / DATABASE_FILE) as tmp, open(tmp, "wb") as f:
            np.save(f, database)
    with atomic_path(run_dir / "transform.npz") as tmp:
        transform.save(tmp)
    with atomic_path(run_dir / "index.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(INDEX_COLUMNS)
        writer.writerows(part.index_rows)
    meta = {
        "train_run": str(train_run.resolve()),
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": sha256,
        "checkpoint_epoch": ckpt["epoch"],
        "model": model_cfg["name"],
        "model_config": model_cfg,
        **what,  # data, data_dir, images: what was embedded
        "trained_on": ckpt["data"],
        "image_size": image_size,
        "input_size": input_size,  # what the encoder saw (query and serve resize their images to it too)
        "dim": int(embeddings.shape[1]),
        "raw_dim": raw_dim,
        "pooling": pooling,
        "gem_p": float(cfg.gem_p),
        "l2": bool(cfg.l2),
        "pca_whiten": cfg.pca_whiten,
        "whiten_shrinkage": float(cfg.whiten_shrinkage),
        "dba_k": int(cfg.dba_k),
        "dba_alpha": float(cfg.dba_alpha),
        "qe_k": int(cfg.qe_k),
        "qe_alpha": float(cfg.qe_alpha),
        "settings_from_train_run": from_train_run,
        "transform": "transform.npz",
        "index": index_meta,
        "counts": part.counts,
    }
    if collection is not None:
        meta["failed"] = len(part.failures)
    write_json_atomic(run_dir / "embed.json", meta)
    write_manifest(run_dir, [*ARTIFACTS, "transform.npz", *([DATABASE_FILE] if cfg.dba_k else []), *index_files,
                             *(["failures.csv"] if collection is not None else [])])
    write_run_record(run_dir, "embed", "complete", train_run=str(train_run), model=model_cfg["name"], data=what["data"])
    total = len(part.index_rows)
    log.info("embedded %d images of %s with %s at %d px (dim %d, %s pooling, l2 %s, pca_whiten %s, dba_k %d, qe_k %d, "
             "index %s) into %s", total, what["data"], model_cfg["name"], input_size, meta["dim"], pooling, cfg.l2,
             cfg.pca_whiten, cfg.dba_k, cfg.qe_k, index.name, run_dir)
    out: dict[str, Any] = {"run_dir": run_dir, "model": model_cfg["name"], "images": total, "dim": meta["dim"],
                           "index": index.name}
    if collection is not None:
        out["failed"] = len(part.failures)
    return out
