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
the command line win. The command layer (commands/embed.py) resolves them into one EmbedSettings;
run_embed takes it: resolve (the checkpoint, what to embed) / encode / post-process / write.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig

from landmark_ae.config import EmbedSettings, enum_value
from landmark_ae.data.prepared import SPLITS, Split, dataset_name, load_prepared, resize_uint8, to_model_range
from landmark_ae.device import pick_device
from landmark_ae.errors import UserError
from landmark_ae.model.builder import ConvAutoencoder
from landmark_ae.model.checkpoints import checked_sha256, fingerprint, load_checkpoint, model_from_checkpoint
from landmark_ae.retrieval.collection import (
    COLLECTION_FAILURE_COLUMNS,
    Collection,
    decode_batches,
    open_collection,
    training_image_size,
)
from landmark_ae.retrieval.diffusion import DIFFUSION_FILE, neighbour_graph, save_graph
from landmark_ae.retrieval.embed_run import ARTIFACTS, DATABASE_FILE, INDEX_COLUMNS
from landmark_ae.retrieval.expansion import dba
from landmark_ae.retrieval.index import Index, build
from landmark_ae.retrieval.onnx_encoder import ONNX_FILE
from landmark_ae.retrieval.onnx_export import export_for_run
from landmark_ae.retrieval.postprocess import Transform, encoder_rows
from landmark_ae.runs import Run, atomic_path, refuse_empty, write_json_atomic, write_manifest, write_run_record

log = logging.getLogger(__name__)

# Images per encoder forward on the CPU, whatever embed's batch_size (which sets the progress steps):
# a batch of 256 at 112 px spills its activations out of the caches. With channels_last inputs
# (oneDNN's native layout: no reorder per conv), M5 at 112 px in batches of 256 on 2 idle cores:
# 453 -> 537 images/s (scripts/bench_onnx.py, torch_whole_nchw vs torch; BENCHMARKS.md).
CPU_CHUNK = 32


@torch.inference_mode()
def embed_images(
    model: ConvAutoencoder, images: np.ndarray, input_size: int, batch_size: int, device: torch.device,
    on_batch: Callable[[int], None] = lambda n: None, pooling: str = "flatten", gem_p: float = 3.0,
) -> np.ndarray:
    """uint8 (N, S, S, 3) images -> float32 (N, D) bottlenecks, pooled (default: flattened), in batches."""
    model.eval()
    out: list[np.ndarray] = []
    on_cpu = device.type == "cpu"
    for start in range(0, len(images), batch_size):
        batch = to_model_range(resize_uint8(images[start : start + batch_size], input_size)).to(device)
        for part in batch.split(CPU_CHUNK) if on_cpu else (batch,):
            if on_cpu:
                part = part.contiguous(memory_format=torch.channels_last)
            latent = encoder_rows(model.encoder, part, pooling, gem_p)
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


# ---- resolve: the checkpoint, and what it embeds ------------------------------------------------------

REMAKE_TRAIN_RUN = "train the model again with `landmark-ae train`"


@dataclass(frozen=True)
class EmbedInputs:
    """The checkpoint an embed run embeds with and what it embeds (images= or data_dir=, or neither:
    the train run's own dataset), resolved once. A resumed run keeps those it started with."""

    train_run: Path
    checkpoint: Path  # train_run/best.pt
    checkpoint_sha256: str | None
    images: str | None
    data_dir: str | None


def resolve_inputs(cfg: DictConfig, run_dir: Path) -> EmbedInputs:
    """The train run (train_run=, or the latest complete one) and its checkpoint's sha256, the file
    hashed once; resumed (resume=), the train run and collection run.json recorded when the run
    started, refused if the checkpoint changed since."""
    refuse_empty(cfg.data_dir, "data_dir", "prepare run dir", "the train run's dataset")
    refuse_empty(cfg.images, "images", "folder or text file of paths", "a prepared dataset")
    if cfg.data_dir and cfg.images:
        raise UserError("data_dir= and images= both name what to embed: pass one of them (data_dir=<prepare run> "
                        "for a labelled dataset, images=<folder or text file of paths> for any images)")
    # A resumed embed run embeds with the checkpoint it started with, not the newest train run's,
    # and the collection it started on (recorded as an absolute path), not the newest prepare run.
    started = (Run(run_dir).record or {}) if cfg.resume else {}
    if started.get("train_run"):
        train_run = Path(started["train_run"])
        sha256 = fingerprint(train_run / "best.pt") if (train_run / "best.pt").is_file() else None
    else:
        train_run = resolve_train_run(cfg)
        sha256 = checked_sha256(train_run, REMAKE_TRAIN_RUN)  # the manifest check and the digest: one read
    checkpoint = train_run / "best.pt"
    if started.get("checkpoint_sha256") and sha256 != started["checkpoint_sha256"]:
        raise UserError(f"{checkpoint} changed since this embed run started: start a new embed run "
                        f"(`landmark-ae embed train_run={train_run}`)")
    if started.get("images") or started.get("data_dir"):
        images, data_dir = started.get("images"), started.get("data_dir")
    else:
        images, data_dir = cfg.images, cfg.data_dir
    return EmbedInputs(train_run, checkpoint, sha256, images, data_dir)


def resolve_train_run(cfg: DictConfig) -> Path:
    run = Run.resolve(cfg.train_run, cfg.paths.output_dir, "train", "train_run",
                      "run `landmark-ae train` first, or pass train_run=<train run dir>").path
    if not (run / "best.pt").is_file():
        raise UserError(f"{run} has no best.pt: it is not a finished train run (train it, or resume it with resume={run})")
    return run


@dataclass
class Source:
    """What is embedded: a collection (images=) or a prepared dataset's splits, as embed.json names it."""

    data: str  # the dataset's name (`images:<folder>` for a collection)
    data_dir: str | None  # the prepared dataset, absolute
    images: str | None  # the collection as given
    image_size: int  # the side the images are stored at (a collection: the trained-on dataset's)
    collection: Collection | None = None
    splits: dict[str, Split] = field(default_factory=dict)


def open_source(inputs: EmbedInputs, ckpt: dict[str, Any]) -> Source:
    trained_dir = Path(ckpt["data_dir"])
    if inputs.images:
        collection = open_collection(inputs.images)
        return Source(collection.name, None, str(collection.source), training_image_size(trained_dir), collection)
    embedded_dir = Path(inputs.data_dir).expanduser() if inputs.data_dir else trained_dir
    splits = load_prepared(embedded_dir, SPLITS)
    embedded_dir = embedded_dir.resolve()
    name = ckpt["data"] if embedded_dir == trained_dir.resolve() else dataset_name(embedded_dir)
    return Source(name, str(embedded_dir), None, int(splits["train"].images.shape[1]), splits=splits)


# ---- encode: the model's latents, pooled -----------------------------------------------------------------


@dataclass
class Encoder:
    """The model as embed_prepared and embed_collection call it: uint8 images -> pooled latents."""

    model: ConvAutoencoder
    input_size: int
    batch_size: int
    device: torch.device
    pooling: str
    gem_p: float

    def __call__(self, images: np.ndarray, on_batch: Callable[[int], None] = lambda n: None) -> np.ndarray:
        return embed_images(self.model, images, self.input_size, self.batch_size, self.device, on_batch,
                            self.pooling, self.gem_p)


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
            index_rows.extend([collection.ids[i], "", "database", collection.path_text(i)] for i in positions)
        failures.extend(failed)
        bar.update(task, advance=len(positions) + len(failed), status=f"{len(failures)} failed" if failures else "")
    with atomic_path(run_dir / "failures.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLLECTION_FAILURE_COLUMNS)
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


def encode(source: Source, encoder: Encoder, run_dir: Path, progress: bool, description: str) -> Embedded:
    from landmark_ae.ui import progress_bar

    with progress_bar(progress) as bar:
        if source.collection is not None:
            return embed_collection(source.collection, source.image_size, encoder.batch_size, encoder, bar,
                                    description, run_dir)
        return embed_prepared(source.splits, Path(str(source.data_dir)), encoder, bar, description)


# ---- post-process: L2 / PCA-whitening, DBA, the database search --------------------------------------


@dataclass
class Processed:
    """The rows as stored and searched."""

    embeddings: np.ndarray  # (N, dim): every row after the transform
    database: np.ndarray  # the database rows as searched (after DBA when dba_k > 0)
    transform: Transform
    index: Index  # built over `database`
    build_s: float
    graph: Any = None  # diffusion_k > 0: the database's neighbour graph (retrieval/diffusion.py)


def fit_inherited_whitening(part: Embedded, settings: EmbedSettings, from_train_run: dict[str, Any]) -> EmbedSettings:
    """A pca_whiten the train run carries (the retrieval recipe's 192) can exceed what a small collection
    can fit (its database rows - 1): it is cut to that, with one warning. One given on the command line
    is the user's own choice and is refused by post_process instead."""
    rows, dim = int(part.database.sum()), part.embeddings.shape[1]
    most = max(min(dim, rows - 1), 1)
    if "pca_whiten" not in from_train_run or not settings.pca_whiten or settings.pca_whiten <= most:
        return settings
    log.warning("pca_whiten=%d from the train run's eval_embed is more than %d database rows can fit: whitening "
                "%d axes (pass pca_whiten=<n> to choose)", settings.pca_whiten, rows, most)
    return dataclasses.replace(settings, pca_whiten=most)


def post_process(part: Embedded, settings: EmbedSettings, index_cfg: Any) -> Processed:
    """The transform fitted on the database rows and applied to all; DBA over the database; its index."""
    try:
        transform = Transform.fit(part.embeddings[part.database], l2=settings.l2, pca_whiten=settings.pca_whiten,
                                  shrink=settings.whiten_shrinkage)
    except ValueError as exc:
        raise UserError(f"pca_whiten={settings.pca_whiten} is too large: {exc}") from None
    embeddings = transform.apply(part.embeddings)
    database = embeddings[part.database]
    if settings.dba_k:  # neighbours found with the run's own kind of index over the rows as they were
        tick = time.perf_counter()
        database = dba(database, settings.dba_k, settings.dba_alpha, build(database, index_cfg, l2=True))
        log.info("DBA over %d database rows (k %d, alpha %g) in %.1fs", len(database), settings.dba_k,
                 settings.dba_alpha, time.perf_counter() - tick)
    # The database search (conf/index/): built once over the post-processed database rows.
    tick = time.perf_counter()
    index = build(database, index_cfg, l2=bool(settings.l2))
    build_s = round(time.perf_counter() - tick, 3)
    graph = None
    if settings.diffusion_k:  # over the database as searched (after DBA), with its own index
        tick = time.perf_counter()
        graph = neighbour_graph(database, settings.diffusion_k, index)
        log.info("diffusion graph over %d database rows (k %d): %d edges in %.1fs", len(database),
                 settings.diffusion_k, graph.nnz, time.perf_counter() - tick)
    return Processed(embeddings, database, transform, index, build_s, graph)


# ---- write: the arrays, the index, embed.json ---------------------------------------------------------


@dataclass
class EmbedRecord:
    """embed.json: how the run's rows were made, what query, serve and evaluate read back
    (embed_run.META_KEYS). `settings` are written flat beside the rest, with input_size the side
    the encoder saw (query and serve resize their images to it too)."""

    train_run: str
    checkpoint: str
    checkpoint_sha256: str | None
    checkpoint_epoch: int
    model: str
    model_config: dict[str, Any]
    data: str  # data, data_dir, images: what was embedded
    data_dir: str | None
    images: str | None
    trained_on: str
    image_size: int
    dim: int
    raw_dim: int
    settings: EmbedSettings
    settings_from_train_run: dict[str, Any]  # the train run's eval_embed values that changed a default
    index: dict[str, Any]  # name, metric and the kind's settings; file, build_s
    counts: dict[str, int]
    transform: str = "transform.npz"
    failed: int | None = None  # images= only: files that could not be used
    onnx: dict[str, Any] | None = None  # encoder.onnx and its check against torch (retrieval/onnx_export.py)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "settings":
                out.update({k: enum_value(v) for k, v in dataclasses.asdict(value).items()})
            elif f.name not in ("failed", "onnx") or value is not None:
                out[f.name] = value
        return out


def write_rows(run_dir: Path, part: Embedded, processed: Processed, dba_k: int) -> list[str]:
    """embeddings.npy, database.npy (DBA), diffusion.npz (diffusion_k), transform.npz, index.csv and the
    index's own files (returned)."""
    index_files = processed.index.save(run_dir)
    if processed.graph is not None:
        with atomic_path(run_dir / DIFFUSION_FILE) as tmp:
            save_graph(processed.graph, tmp)
    with atomic_path(run_dir / "embeddings.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, processed.embeddings)
    if dba_k:
        with atomic_path(run_dir / DATABASE_FILE) as tmp, open(tmp, "wb") as f:
            np.save(f, processed.database)
    with atomic_path(run_dir / "transform.npz") as tmp:
        processed.transform.save(tmp)
    with atomic_path(run_dir / "index.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(INDEX_COLUMNS)
        writer.writerows(part.index_rows)
    return index_files


def run_embed(cfg: DictConfig, run_dir: Path, inputs: EmbedInputs, settings: EmbedSettings,
              from_train_run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Embed with `settings`, the effective ones (the command layer's: keys given on the command line,
    then the train run's, then the defaults; `from_train_run`: those the train run changed)."""
    ckpt = load_checkpoint(inputs.checkpoint)
    model_cfg = ckpt["model_config"]
    source = open_source(inputs, ckpt)
    device = pick_device(cfg.device)
    model = model_from_checkpoint(ckpt).to(device)
    write_run_record(run_dir, "embed", "running", train_run=str(inputs.train_run), model=model_cfg["name"],
                     checkpoint_sha256=inputs.checkpoint_sha256, data_dir=source.data_dir, images=source.images)
    encoder = Encoder(model, check_input_size(model, model_cfg, settings.input_size), cfg.batch_size, device,
                      enum_value(settings.pooling), settings.gem_p)
    encoder, onnx = export_for_run(cfg, run_dir, encoder, source)  # encoder.onnx, and onnx encodes on the CPU
    part = encode(source, encoder, run_dir, cfg.progress, f"embed with {model_cfg['name']}")
    settings = fit_inherited_whitening(part, settings, from_train_run or {})
    processed = post_process(part, settings, cfg.index)
    index_files = write_rows(run_dir, part, processed, settings.dba_k)
    record = EmbedRecord(
        train_run=str(inputs.train_run.resolve()), checkpoint=str(inputs.checkpoint.resolve()),
        checkpoint_sha256=inputs.checkpoint_sha256, checkpoint_epoch=ckpt["epoch"], model=model_cfg["name"],
        model_config=model_cfg, data=source.data, data_dir=source.data_dir, images=source.images,
        trained_on=ckpt["data"], image_size=source.image_size, dim=int(processed.embeddings.shape[1]),
        raw_dim=int(part.embeddings.shape[1]), settings=dataclasses.replace(settings, input_size=encoder.input_size),
        settings_from_train_run=dict(from_train_run or {}), counts=part.counts,
        index={**processed.index.settings, "file": index_files[0] if index_files else None, "build_s": processed.build_s},
        failed=len(part.failures) if source.collection is not None else None, onnx=onnx)
    write_json_atomic(run_dir / "embed.json", record.to_json())
    write_manifest(run_dir, [*ARTIFACTS, "transform.npz", *([DATABASE_FILE] if settings.dba_k else []), *index_files,
                             *([DIFFUSION_FILE] if processed.graph is not None else []),
                             *(["failures.csv"] if source.collection is not None else []), *([ONNX_FILE] if onnx else [])])
    write_run_record(run_dir, "embed", "complete", train_run=str(inputs.train_run), model=model_cfg["name"],
                     data=source.data)
    return summary(record, len(part.index_rows), processed.index.name, run_dir)


def summary(record: EmbedRecord, total: int, index_name: str, run_dir: Path) -> dict[str, Any]:
    """The run's log line, and its result lines."""
    s = record.settings
    log.info("embedded %d images of %s with %s at %d px (dim %d, %s pooling, l2 %s, pca_whiten %s, dba_k %d, qe_k %d, "
             "index %s) into %s", total, record.data, record.model, s.input_size, record.dim, enum_value(s.pooling),
             s.l2, s.pca_whiten, s.dba_k, s.qe_k, index_name, run_dir)
    out: dict[str, Any] = {"run_dir": run_dir, "model": record.model, "images": total, "dim": record.dim,
                           "index": index_name}
    if record.failed is not None:
        out["failed"] = record.failed
    return out
