"""`landmark-ae embed`: the encoder's bottleneck, flattened, for every image of train/val/test.

An embed run dir holds:
    embeddings.npy   float32 (N, D), memory-mappable; row i is index.csv's row i
    index.csv        id, landmark_id, split, path (absolute path of the stored image)
    embed.json       train run, checkpoint path + sha256, model config, dataset, image sizes,
                     post-processing (pooling, gem_p, l2, pca_whiten, raw_dim)
    transform.npz    the L2 / PCA-whitening fitted on train+val rows (query applies it too)

embeddings.npy holds the post-processed rows: evaluate and query search them as they are.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig

from landmark_ae.config import enum_value
from landmark_ae.data.prepared import SPLITS, load_prepared, resize_uint8, to_model_range
from landmark_ae.device import pick_device
from landmark_ae.errors import UserError
from landmark_ae.model.builder import ConvAutoencoder
from landmark_ae.model.checkpoints import fingerprint, load_checkpoint, model_from_checkpoint
from landmark_ae.retrieval.embed_run import ARTIFACTS, INDEX_COLUMNS
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


def resolve_train_run(cfg: DictConfig) -> Path:
    run = resolve_run(cfg.train_run, cfg.paths.output_dir, "train", "train_run",
                      "run `landmark-ae train` first, or pass train_run=<train run dir>")
    if not (run / "best.pt").is_file():
        raise UserError(f"{run} has no best.pt: it is not a finished train run (train it, or resume it with resume={run})")
    check_artifacts(run, ["best.pt"], "train the model again with `landmark-ae train`")
    return run


def run_embed(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from landmark_ae.ui import progress_bar

    # A resumed embed run embeds with the checkpoint it started with, not the newest train run's.
    started = (read_run_record(run_dir) or {}) if cfg.resume else {}
    train_run = Path(started["train_run"]) if started.get("train_run") else resolve_train_run(cfg)
    checkpoint = train_run / "best.pt"
    sha256 = fingerprint(checkpoint) if checkpoint.is_file() else None
    if started.get("checkpoint_sha256") and sha256 != started["checkpoint_sha256"]:
        raise UserError(f"{checkpoint} changed since this embed run started: start a new embed run "
                        f"(`landmark-ae embed train_run={train_run}`)")
    ckpt = load_checkpoint(checkpoint)
    model_cfg = ckpt["model_config"]
    device = pick_device(cfg.device)
    model = model_from_checkpoint(ckpt).to(device)
    data_dir = Path(ckpt["data_dir"])
    splits = load_prepared(data_dir, SPLITS)
    image_size = int(splits["train"].images.shape[1])
    write_run_record(run_dir, "embed", "running", train_run=str(train_run), model=model_cfg["name"],
                     checkpoint_sha256=sha256)

    pooling = enum_value(cfg.pooling)
    total = sum(len(s.images) for s in splits.values())
    parts, index_rows = [], []
    with progress_bar(cfg.progress) as bar:
        task = bar.add_task(f"embed with {model_cfg['name']}", total=total, status="")
        for name, split in splits.items():
            parts.append(embed_images(model, split.images, int(model_cfg["input_size"]), cfg.batch_size, device,
                                      lambda n: bar.update(task, advance=n), pooling, cfg.gem_p))
            for row in split.manifest.itertuples(index=False):
                index_rows.append([row.id, int(row.landmark_id), name, str((data_dir / row.path).resolve())])
    embeddings = np.concatenate([p for p in parts if p.size]) if total else np.zeros((0, 0), np.float32)
    raw_dim = int(embeddings.shape[1])
    database = np.array([r[2] in ("train", "val") for r in index_rows], dtype=bool)
    try:
        transform = Transform.fit(embeddings[database], l2=cfg.l2, pca_whiten=cfg.pca_whiten)
    except ValueError as exc:
        raise UserError(f"pca_whiten={cfg.pca_whiten} is too large: {exc}") from None
    embeddings = transform.apply(embeddings)

    with atomic_path(run_dir / "embeddings.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, embeddings)
    with atomic_path(run_dir / "transform.npz") as tmp:
        transform.save(tmp)
    with atomic_path(run_dir / "index.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(INDEX_COLUMNS)
        writer.writerows(index_rows)
    meta = {
        "train_run": str(train_run.resolve()),
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": sha256,
        "checkpoint_epoch": ckpt["epoch"],
        "model": model_cfg["name"],
        "model_config": model_cfg,
        "data": ckpt["data"],
        "data_dir": str(data_dir.resolve()),
        "image_size": image_size,
        "dim": int(embeddings.shape[1]),
        "raw_dim": raw_dim,
        "pooling": pooling,
        "gem_p": float(cfg.gem_p),
        "l2": bool(cfg.l2),
        "pca_whiten": cfg.pca_whiten,
        "transform": "transform.npz",
        "counts": {name: len(s.images) for name, s in splits.items()},
    }
    write_json_atomic(run_dir / "embed.json", meta)
    write_manifest(run_dir, [*ARTIFACTS, "transform.npz"])
    write_run_record(run_dir, "embed", "complete", train_run=str(train_run), model=model_cfg["name"], data=ckpt["data"])
    log.info("embedded %d images with %s (dim %d, %s pooling, l2 %s, pca_whiten %s) into %s", total,
             model_cfg["name"], meta["dim"], pooling, cfg.l2, cfg.pca_whiten, run_dir)
    return {"run_dir": run_dir, "model": model_cfg["name"], "images": total, "dim": meta["dim"]}
