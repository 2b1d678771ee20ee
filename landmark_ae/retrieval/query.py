"""`landmark-ae query`: the nearest train+val images of one or more query images.

Results go to stdout (TSV with a header by default: rank, distance, id, landmark_id, path, query),
so `landmark-ae query image=x.jpg | cut -f3` lists ids. Kept off pandas, sklearn and torchvision:
a query in a shell loop should cost little more than importing torch.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig

from landmark_ae.data.images import ImageError, resized_rgb
from landmark_ae.device import pick_device
from landmark_ae.errors import UserError
from landmark_ae.model.checkpoints import fingerprint, load_checkpoint, model_from_checkpoint
from landmark_ae.retrieval.embed import embed_images
from landmark_ae.retrieval.embed_run import resolve_embed_run
from landmark_ae.retrieval.search import search
from landmark_ae.runs import write_run_record

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TSV_COLUMNS = ["rank", "distance", "id", "landmark_id", "path", "query"]


def collect_images(spec: Any) -> list[Path]:
    """`image=` as one path, a list of paths, or a folder (its image files, sorted)."""
    items = list(spec) if isinstance(spec, (list, tuple, ListConfig)) else [spec]
    paths: list[Path] = []
    for item in items:
        path = Path(str(item)).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise UserError(f"query folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths.extend(found)
        elif not path.exists():
            raise UserError(f"query image {path} does not exist")
        else:
            paths.append(path)
    if not paths:
        raise UserError("no query image given: pass image=<path>, image=[a.jpg,b.jpg] or image=<folder>")
    return paths


def load_queries(paths: list[Path], image_size: int) -> np.ndarray:
    """Each query through the training preprocessing: decode (any mode, EXIF-rotated), resize."""
    arrays = []
    for path in paths:
        try:
            image, _ = resized_rgb(path, image_size)
        except ImageError as exc:
            what = {"empty": "is empty", "corrupt": "is truncated or corrupt", "not_an_image": "is not an image",
                    "too_large": "is too large", "missing": "does not exist"}.get(exc.reason, exc.reason)
            detail = f": {exc.detail}" if exc.detail and exc.reason == "corrupt" else ""
            raise UserError(f"query image {path} {what}{detail}") from None
        arrays.append(np.asarray(image, dtype=np.uint8))
    return np.stack(arrays)


def run_query(cfg: DictConfig, run_dir: Path) -> None:
    run = resolve_embed_run(cfg.embed_run, cfg.paths.output_dir)
    write_run_record(run_dir, "query", "running", embed_run=str(run.run_dir), model=run.meta["model"])
    checkpoint = Path(cfg.checkpoint or run.meta["checkpoint"]).expanduser()
    if not checkpoint.is_file():
        raise UserError(f"checkpoint {checkpoint} not found: pass checkpoint=<best.pt> or re-run `landmark-ae embed`")
    if fingerprint(checkpoint) != run.meta["checkpoint_sha256"]:
        raise UserError(
            f"the embeddings in {run.run_dir} were made by another checkpoint than {checkpoint}: "
            f"re-run `landmark-ae embed train_run={checkpoint.parent}` or query that embed run"
        )
    ckpt = load_checkpoint(checkpoint)
    device = pick_device(cfg.device)
    model = model_from_checkpoint(ckpt).to(device)

    paths = collect_images(cfg.image)
    images = load_queries(paths, int(run.meta["image_size"]))
    queries = embed_images(model, images, int(ckpt["model_config"]["input_size"]), cfg.batch_size, device,
                           pooling=run.meta["pooling"], gem_p=float(run.meta["gem_p"]))
    queries = run.transform().apply(queries)  # the embed run's L2 / PCA-whitening, fitted on its database
    if queries.shape[1] != run.embeddings.shape[1]:
        raise UserError(f"query embeddings have {queries.shape[1]} values but {run.run_dir} holds {run.embeddings.shape[1]}: "
                        "embed with the same model")

    database = run.rows("train", "val")
    if len(database) == 0:
        raise UserError(f"{run.run_dir} has no train/val images to search")
    contiguous = database[-1] - database[0] + 1 == len(database)
    db = run.embeddings[database[0] : database[-1] + 1] if contiguous else run.embeddings[database]
    k = min(cfg.k, len(database))
    if cfg.k > len(database):
        log.warning("k=%d is larger than the database (%d images): returning all of them", cfg.k, len(database))
    distances, positions = search(queries, db, k)

    results = []
    for qi, path in enumerate(paths):
        hits = []
        for rank, (dist, pos) in enumerate(zip(distances[qi], positions[qi], strict=True), start=1):
            row = database[pos]
            hits.append({"rank": rank, "distance": float(dist), "id": run.ids[row],
                         "landmark_id": int(run.labels[row]), "path": run.paths[row]})
        results.append({"query": str(path), "neighbours": hits})
    grid = None
    if cfg.save_grid:
        from landmark_ae.figures import plot_retrieval_grid

        grid = plot_retrieval_grid(images, results, run_dir / "retrieval_grid.png",
                                   f"{run.meta['model']}: query (left) and nearest images, by Euclidean distance")
        log.info("retrieval grid: %s", grid)
    write_results(results, cfg.format, grid)
    write_run_record(run_dir, "query", "complete", embed_run=str(run.run_dir), model=run.meta["model"],
                     queries=len(paths), k=k, grid=str(grid) if grid else None)


def write_results(results: list[dict], fmt: str, grid: Path | None = None) -> None:
    """The neighbours on stdout; with a grid figure, a last `grid<TAB>path` line (tsv, table; json
    stays one JSON document, the path is logged on stderr)."""
    out = sys.stdout
    if fmt == "json":
        json.dump(results, out, indent=2)
        out.write("\n")
    elif fmt == "table":
        from rich.table import Table

        from landmark_ae.ui import make_console

        table = Table(*TSV_COLUMNS)
        for r in results:
            for h in r["neighbours"]:
                # file names only: a table is for reading; tsv/json carry the full paths
                table.add_row(str(h["rank"]), f"{h['distance']:.4f}", h["id"], str(h["landmark_id"]),
                              Path(h["path"]).name, Path(r["query"]).name)
        make_console(out).print(table)
    else:
        out.write("\t".join(TSV_COLUMNS) + "\n")
        for r in results:
            for h in r["neighbours"]:
                out.write(f"{h['rank']}\t{h['distance']:.6f}\t{h['id']}\t{h['landmark_id']}\t{h['path']}\t{r['query']}\n")
    if grid is not None and fmt != "json":
        out.write(f"grid\t{grid}\n")
    out.flush()
