"""`landmark-ae query`: the nearest database images of one or more query images.

Results go to stdout (TSV with a header by default: rank, distance, id, landmark_id, path, query, class_name),
so `landmark-ae query image=x.jpg | cut -f3` lists ids. `image=` is one image, a list of them, a
folder (its image files, recursively), or `-`: paths from stdin, one per line, answered batch by batch
as they come (`find photos -name '*.jpg' | landmark-ae query image=-`). Folders, stdin lines and the
reading of each file follow the one collection rule of retrieval/collection.py (the same as `embed
images=`): an image that cannot be used is skipped with one `skipped: ...` line on stderr and the rest
are answered; when none is answered, exit 2 with one line saying why.

TSV text fields (id, landmark_id, path, query, class_name) are escaped by landmark_ae.output.tsv_field: `\\`,
`\t`, `\n`, `\r` (PostgreSQL COPY's text format), so a row is always 7 fields on one line. Paths
(in every format) are shown as recorded: a byte of a file name that is not UTF-8 as `\\xNN`. Kept off
pandas, sklearn and torchvision, and off torch where the run has encoder.onnx (runtime=auto|onnx on the
CPU, retrieval/retriever.choose_runtime): a query in a shell loop costs little more than its imports.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from omegaconf import DictConfig, ListConfig

from landmark_ae.config import enum_value
from landmark_ae.data.images import IMAGE_SUFFIXES, ImageError
from landmark_ae.errors import UserError
from landmark_ae.output import StdoutClosed, printable, tsv_field
from landmark_ae.retrieval.collection import describe_failure, image_files, list_entry
from landmark_ae.retrieval.embed_run import resolve_embed_run
from landmark_ae.retrieval.retriever import Retriever
from landmark_ae.runs import write_run_record

log = logging.getLogger(__name__)

TSV_COLUMNS = ["rank", "distance", "id", "landmark_id", "path", "query", "class_name"]  # class_name last: added later


def describe_image_error(path: Path | str, exc: ImageError) -> str:
    return f"query image {printable(path, controls=True)} {describe_failure(exc.reason, exc.detail)}"


class Skips:
    """The query images that could not be used. Each is a `skipped: ...` warning as it comes, except
    that while nothing has been answered the first is held back: a single bad image is then one error
    line, not a warning followed by the same words as the error."""

    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()
        self.answered = 0
        self.held: str | None = None

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def skip(self, message: str, reason: str) -> None:
        self.reasons[reason] += 1
        if self.count == 1 and not self.answered:
            self.held = message
            return
        self.release()
        log.warning("skipped: %s", message)

    def answer(self) -> None:
        self.answered += 1
        self.release()

    def release(self) -> None:
        if self.held is not None:
            log.warning("skipped: %s", self.held)
            self.held = None

    def nothing_answered(self) -> UserError:
        if self.held is not None and self.count == 1:
            return UserError(self.held)
        if not self.count:
            return UserError("image=-: stdin named no image path: pipe one path per line, e.g. "
                             "find photos -name '*.jpg' | landmark-ae query image=-")
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.reasons.items()))
        return UserError(f"none of the {self.count} query images could be used ({reasons}): each is named "
                         "in a `skipped:` line above")


def query_paths(spec: Any, skips: Skips) -> Iterator[Path]:
    """The paths `image=` names, in order: one path, a list of paths, a folder (its image files,
    recursively: collection.image_files) or `-` (stdin's lines: collection.list_entry)."""
    if str(spec) == "-":
        stream = getattr(sys.stdin, "buffer", sys.stdin)  # bytes: a name need not be UTF-8
        for line in stream:
            entry = list_entry(line)
            if entry is not None:
                yield Path(entry).expanduser()
        return
    items = list(spec) if isinstance(spec, (list, tuple, ListConfig)) else [spec]
    if not items:
        raise UserError("no query image given: pass image=<path>, image=[a.jpg,b.jpg], image=<folder> or image=-")
    for item in items:
        path = Path(str(item)).expanduser()
        if path.is_dir():
            found = image_files(path)
            if not found:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                skips.skip(f"query folder {printable(path, controls=True)} holds no images ({suffixes}), in it or below",
                           "no_images")
            yield from found
        else:
            yield path


def query_batches(retriever: Retriever, paths: Iterable[Path], batch_size: int,
                  skips: Skips) -> Iterator[tuple[list[Path], np.ndarray]]:
    """The readable query images in batches of batch_size; the others go to `skips`."""
    batch: list[Path] = []
    arrays: list[np.ndarray] = []
    for path in paths:
        try:
            arrays.append(retriever.load_image(path))
        except ImageError as exc:
            skips.skip(describe_image_error(path, exc), exc.reason)
            continue
        skips.answer()
        batch.append(path)
        if len(batch) == batch_size:
            yield batch, np.stack(arrays)
            batch, arrays = [], []
    if batch:
        yield batch, np.stack(arrays)


def run_query(cfg: DictConfig, run_dir: Path) -> None:
    run = resolve_embed_run(cfg.embed_run, cfg.paths.output_dir)
    write_run_record(run_dir, "query", "running", embed_run=str(run.run_dir), model=run.meta["model"])
    retriever = Retriever(run, cfg.checkpoint, cfg.device, cfg.batch_size, runtime=cfg.runtime)
    if cfg.k > retriever.size:
        log.warning("k=%d is larger than the database (%d images): returning all of them", cfg.k, retriever.size)
    skips = Skips()
    writer = ResultWriter(enum_value(cfg.format))
    try:
        grid = answer(cfg, run_dir, retriever, query_batches(retriever, query_paths(cfg.image, skips),
                                                             cfg.batch_size, skips), writer)
    except StdoutClosed:
        write_run_record(run_dir, "query", "interrupted", error=f"stdout was closed by its reader after "
                         f"{writer.count} answered queries (e.g. `| head`): the rest was not answered")
        raise
    if not writer.count:
        raise skips.nothing_answered()
    write_run_record(run_dir, "query", "complete", embed_run=str(run.run_dir), model=run.meta["model"],
                     queries=writer.count, skipped=skips.count, k=min(cfg.k, retriever.size), runtime=retriever.runtime,
                     grid=str(grid) if grid else None)


def answer(cfg: DictConfig, run_dir: Path, retriever: Retriever, batches: Iterable[tuple[list[Path], np.ndarray]],
           writer: ResultWriter) -> Path | None:
    """Every batch's neighbours through `writer`, then the grid figure (save_grid=true); its path."""
    shown: list[np.ndarray] = []  # the images the grid figure shows (its first rows)
    for paths, images in batches:
        results = [{"query": printable(p), "neighbours": hits}
                   for p, hits in zip(paths, retriever.neighbours(images, cfg.k), strict=True)]
        writer.write(results)
        if cfg.save_grid and len(shown) < GRID_ROWS:
            shown.extend(images[: GRID_ROWS - len(shown)])
            writer.keep_for_grid(results)
    if not writer.count:
        return None
    grid = None
    if cfg.save_grid and shown:
        from landmark_ae.figures import plot_retrieval_grid

        grid = plot_retrieval_grid(np.stack(shown), writer.grid_results[:GRID_ROWS], run_dir / "retrieval_grid.png",
                                   f"{retriever.run.meta['model']}: query (left) and nearest images, by Euclidean distance")
        log.info("retrieval grid: %s", grid)
    writer.close(grid)
    return grid


GRID_ROWS = 8


class ResultWriter:
    """The neighbours on stdout as they come: tsv (a header, then one line per neighbour), jsonl (one
    object per query), json (one list, written at the end) or table (at the end). With a grid figure,
    a last `grid<TAB>path` line (tsv, table; json/jsonl log the path on stderr instead). Nothing is
    written before the first answer, so a query that answers nothing leaves stdout empty."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.count = 0  # queries answered
        self.held: list[dict] = []  # json and table are written whole, at the end
        self.grid_results: list[dict] = []

    def keep_for_grid(self, results: list[dict]) -> None:
        self.grid_results.extend(results)

    def write(self, results: list[dict]) -> None:
        out = sys.stdout
        if self.fmt == "tsv":
            lines = [] if self.count else ["\t".join(TSV_COLUMNS)]
            for r in results:
                query = tsv_field(r["query"])
                lines.extend(f"{h['rank']}\t{h['distance']:.6f}\t{tsv_field(h['id'])}\t{tsv_field(h['landmark_id'])}"
                             f"\t{tsv_field(h['path'])}\t{query}\t{tsv_field(h.get('class_name'))}" for h in r["neighbours"])
            out.write("".join(f"{line}\n" for line in lines))
        elif self.fmt == "jsonl":
            for r in results:
                out.write(json.dumps(r) + "\n")
        else:
            self.held.extend(results)
        self.count += len(results)
        out.flush()

    def close(self, grid: Path | None = None) -> None:
        out = sys.stdout
        if self.fmt == "json":
            json.dump(self.held, out, indent=2)
            out.write("\n")
        elif self.fmt == "table":
            write_table(self.held)
        if grid is not None and self.fmt in ("tsv", "table"):
            out.write(f"grid\t{tsv_field(grid)}\n")
        out.flush()


def write_table(results: list[dict]) -> None:
    from rich.table import Table
    from rich.text import Text

    from landmark_ae.ui import make_console

    table = Table(*TSV_COLUMNS)
    for r in results:
        for h in r["neighbours"]:
            # file names only: a table is for reading; tsv/json carry the full paths. Text(): a name
            # like `[red].jpg` is a name, not rich markup.
            label = "" if h["landmark_id"] is None else str(h["landmark_id"])  # landmark 0 is a label too
            table.add_row(str(h["rank"]), f"{h['distance']:.4f}", Text(printable(h["id"], True)), label,
                          Text(printable(Path(h["path"]).name, True)), Text(printable(Path(r["query"]).name, True)),
                          Text(printable(h.get("class_name") or "", True)))
    make_console(sys.stdout).print(table)
