"""`landmark-ae query`: the nearest database images of one or more query images.

Results go to stdout (TSV with a header by default: rank, distance, id, landmark_id, path, query),
so `landmark-ae query image=x.jpg | cut -f3` lists ids. `image=-` reads paths from stdin, one per
line, and answers them batch by batch as they come (`find photos -name '*.jpg' | landmark-ae query
image=-`). Kept off pandas, sklearn and torchvision: a query in a shell loop should cost little more
than importing torch.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from omegaconf import DictConfig, ListConfig

from landmark_ae.config import enum_value
from landmark_ae.data.images import IMAGE_SUFFIXES, ImageError
from landmark_ae.errors import UserError
from landmark_ae.retrieval.embed_run import resolve_embed_run
from landmark_ae.retrieval.retriever import Retriever
from landmark_ae.runs import write_run_record

log = logging.getLogger(__name__)

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


def describe_image_error(path: Path | str, exc: ImageError) -> str:
    what = {"empty": "is empty", "corrupt": "is truncated or corrupt", "not_an_image": "is not an image",
            "too_large": "is too large", "missing": "does not exist"}.get(exc.reason, exc.reason)
    detail = f": {exc.detail}" if exc.detail and exc.reason == "corrupt" else ""
    return f"query image {path} {what}{detail}"


def load_queries(retriever: Retriever, paths: list[Path]) -> np.ndarray:
    """Every query image, or a UserError naming the first one that cannot be used."""
    arrays = []
    for path in paths:
        try:
            arrays.append(retriever.load_image(path))
        except ImageError as exc:
            raise UserError(describe_image_error(path, exc)) from None
    return np.stack(arrays)


def stdin_batches(retriever: Retriever, batch_size: int) -> Iterator[tuple[list[Path], np.ndarray]]:
    """`image=-`: paths from stdin in batches; an unreadable one is skipped with a line on stderr, so
    one bad file does not stop a pipeline over thousands."""
    paths: list[Path] = []
    arrays: list[np.ndarray] = []
    for line in sys.stdin:
        name = line.rstrip("\r\n")
        if not name.strip():
            continue
        path = Path(name).expanduser()
        try:
            arrays.append(retriever.load_image(path))
        except ImageError as exc:
            log.warning("skipped: %s", describe_image_error(path, exc))
            continue
        paths.append(path)
        if len(paths) == batch_size:
            yield paths, np.stack(arrays)
            paths, arrays = [], []
    if paths:
        yield paths, np.stack(arrays)


def run_query(cfg: DictConfig, run_dir: Path) -> None:
    run = resolve_embed_run(cfg.embed_run, cfg.paths.output_dir)
    write_run_record(run_dir, "query", "running", embed_run=str(run.run_dir), model=run.meta["model"])
    retriever = Retriever(run, cfg.checkpoint, cfg.device, cfg.batch_size)
    if cfg.k > retriever.size:
        log.warning("k=%d is larger than the database (%d images): returning all of them", cfg.k, retriever.size)
    fmt = enum_value(cfg.format)
    if str(cfg.image) == "-":
        batches: Iterable[tuple[list[Path], np.ndarray]] = stdin_batches(retriever, cfg.batch_size)
    else:
        paths = collect_images(cfg.image)
        batches = [(paths, load_queries(retriever, paths))]
    writer = ResultWriter(fmt)
    shown: list[np.ndarray] = []  # the images the grid figure shows (its first rows)
    count = 0
    for paths, images in batches:
        results = [{"query": str(p), "neighbours": hits} for p, hits in zip(paths, retriever.neighbours(images, cfg.k),
                                                                               strict=True)]
        writer.write(results)
        count += len(paths)
        if cfg.save_grid and len(shown) < GRID_ROWS:
            shown.extend(images[: GRID_ROWS - len(shown)])
            writer.keep_for_grid(results)
    grid = None
    if cfg.save_grid and shown:
        from landmark_ae.figures import plot_retrieval_grid

        grid = plot_retrieval_grid(np.stack(shown), writer.grid_results[:GRID_ROWS], run_dir / "retrieval_grid.png",
                                   f"{run.meta['model']}: query (left) and nearest images, by Euclidean distance")
        log.info("retrieval grid: %s", grid)
    writer.close(grid)
    write_run_record(run_dir, "query", "complete", embed_run=str(run.run_dir), model=run.meta["model"],
                     queries=count, k=min(cfg.k, retriever.size), grid=str(grid) if grid else None)


GRID_ROWS = 8


class ResultWriter:
    """The neighbours on stdout as they come: tsv (a header, then one line per neighbour), jsonl (one
    object per query), json (one list, written at the end) or table (at the end). With a grid figure,
    a last `grid<TAB>path` line (tsv, table; json/jsonl log the path on stderr instead)."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.held: list[dict] = []  # json and table are written whole, at the end
        self.grid_results: list[dict] = []
        if fmt == "tsv":
            sys.stdout.write("\t".join(TSV_COLUMNS) + "\n")

    def keep_for_grid(self, results: list[dict]) -> None:
        self.grid_results.extend(results)

    def write(self, results: list[dict]) -> None:
        out = sys.stdout
        if self.fmt == "tsv":
            for r in results:
                for h in r["neighbours"]:
                    label = "" if h["landmark_id"] is None else h["landmark_id"]
                    out.write(f"{h['rank']}\t{h['distance']:.6f}\t{h['id']}\t{label}\t{h['path']}\t{r['query']}\n")
        elif self.fmt == "jsonl":
            for r in results:
                out.write(json.dumps(r) + "\n")
        else:
            self.held.extend(results)
        out.flush()

    def close(self, grid: Path | None = None) -> None:
        out = sys.stdout
        if self.fmt == "json":
            json.dump(self.held, out, indent=2)
            out.write("\n")
        elif self.fmt == "table":
            write_table(self.held)
        if grid is not None and self.fmt in ("tsv", "table"):
            out.write(f"grid\t{grid}\n")
        out.flush()


def write_table(results: list[dict]) -> None:
    from rich.table import Table

    from landmark_ae.ui import make_console

    table = Table(*TSV_COLUMNS)
    for r in results:
        for h in r["neighbours"]:
            # file names only: a table is for reading; tsv/json carry the full paths
            label = "" if h["landmark_id"] is None else str(h["landmark_id"])  # landmark 0 is a label too
            table.add_row(str(h["rank"]), f"{h['distance']:.4f}", h["id"], label, Path(h["path"]).name,
                          Path(r["query"]).name)
    make_console(sys.stdout).print(table)
