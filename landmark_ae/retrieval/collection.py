"""`landmark-ae embed images=...`: any image collection, read for embedding.

A collection is a folder, walked recursively for image files (data.images.IMAGE_SUFFIXES), or a
text file listing one image path per line (relative paths are relative to the file's folder). Its
images are decoded batch by batch, each exactly as a query image is (data.images.resized_rgb), so
a folder of a million files never holds more than one batch of decoded images. A file that cannot
be used (missing, not an image, truncated, too large) becomes a failure row, never an error.

Row ids are the file stems when all of them are unique and safe in a CSV field and on a command
line (letters, digits, `_`, `-`, `.`); otherwise every id is the first 16 hex digits of the sha1
of the file's path relative to the folder (or to the list file's folder): stable across runs.
Kept off pandas and torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator

import numpy as np

from landmark_ae.config import DataConfig
from landmark_ae.data.images import IMAGE_SUFFIXES, ImageError, resized_rgb
from landmark_ae.errors import UserError
from landmark_ae.runs import read_json

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ["id", "path", "reason", "detail"]
SAFE_ID = re.compile(r"[A-Za-z0-9_.\-]+")
# The stored size of the training images when the train run's prepare run is gone: prepare's
# default data.image_size (the seed's 96x96, what every shipped data config stores).
DEFAULT_IMAGE_SIZE = next(f.default for f in fields(DataConfig) if f.name == "image_size")


@dataclass(frozen=True)
class Collection:
    source: Path  # what images= named (absolute): a folder or a list file
    paths: list[Path]  # absolute (not resolved: a symlink keeps its own name), in listing order
    ids: list[str]  # one per path

    @property
    def name(self) -> str:
        """`images:<folder name>` (or the list file's name), embed.json's `data`."""
        return f"images:{self.source.name}"

    def __len__(self) -> int:
        return len(self.paths)


def training_image_size(data_dir: Path | str | None) -> int:
    """The side the model's training images were stored at (the prepare run's dataset.json
    `image_size`): a collection goes through the same two resizes as they did, to that size and
    then to the model's input size. Checkpoints do not record it, so where that prepare run no
    longer exists (or its dataset.json is unreadable), prepare's default of 96 is taken."""
    path = Path(data_dir) / "dataset.json" if data_dir else None
    if path is not None and path.is_file():
        try:
            return int(read_json(path)["image_size"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("%s is unreadable: images are resized to %d first", path, DEFAULT_IMAGE_SIZE)
            return DEFAULT_IMAGE_SIZE
    log.info("the train run's dataset %s is gone: images are resized to %d first, prepare's default", data_dir,
             DEFAULT_IMAGE_SIZE)
    return DEFAULT_IMAGE_SIZE


def _walk(folder: Path) -> list[Path]:
    """The image files under `folder`, recursively, in a stable order (sorted at each level)."""
    found: list[Path] = []

    def skipped(exc: OSError) -> None:
        log.warning("skipped %s: %s", exc.filename, exc.strerror or exc)

    for top, dirs, files in os.walk(folder, onerror=skipped):
        dirs.sort()
        found.extend(Path(top, f) for f in sorted(files) if Path(f).suffix.lower() in IMAGE_SUFFIXES)
    return found


def _listed(list_file: Path) -> list[Path]:
    """The paths a text file lists, one per line (blank lines skipped; relative to its folder)."""
    try:
        text = list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"images={list_file} is not a text file of image paths (not UTF-8 text): "
                        "pass a folder, or a file with one image path per line") from None
    base = list_file.parent
    paths = []
    for line in text.splitlines():
        if line.strip():
            path = Path(line).expanduser()
            paths.append(Path(os.path.abspath(base / path)))
    unique = list(dict.fromkeys(paths))
    if len(unique) < len(paths):
        log.info("%s lists %d path(s) more than once: each is embedded once", list_file, len(paths) - len(unique))
    return unique


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive (Windows): no relative path
        return path.as_posix()


def make_ids(paths: list[Path], base: Path) -> list[str]:
    """File stems when all are unique and safe, else sha1(path relative to `base`)[:16] for all."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems) and all(SAFE_ID.fullmatch(s) for s in stems):
        return stems
    return [hashlib.sha1(_relative(p, base).encode("utf-8")).hexdigest()[:16] for p in paths]


def open_collection(given: str | Path) -> Collection:
    """List the collection `images=` names; one-line UserErrors for what cannot be one."""
    source = Path(os.path.abspath(Path(given).expanduser()))
    if source.is_dir():
        paths, base = _walk(source), source
        if not paths:
            raise UserError(f"images={given}: the folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                            "in it or below")
    elif source.is_file():
        if source.suffix.lower() in IMAGE_SUFFIXES:
            raise UserError(f"images={given} is one image: pass the folder holding the images, or a text file "
                            "listing their paths (one per line)")
        paths, base = _listed(source), source.parent
        if not paths:
            raise UserError(f"images={given} lists no image paths: write one path per line")
    else:
        raise UserError(f"images={given} does not exist: pass a folder of images or a text file of image paths")
    return Collection(source=source, paths=paths, ids=make_ids(paths, base))


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """(image, None) or (None, (reason, detail)): one file of a collection, as query reads it."""
    try:
        image, _ = resized_rgb(path, size)
        return np.asarray(image, dtype=np.uint8), None
    except ImageError as exc:
        return None, (exc.reason, exc.detail)
    except OSError as exc:  # unreadable: permissions, I/O errors
        return None, ("unreadable", exc.strerror or str(exc))
    except Exception as exc:  # a decoder's own error on a malformed file: one failure, not the run's end
        return None, ("corrupt", f"{type(exc).__name__}: {exc}")


def decode_batches(
    collection: Collection, size: int, batch_size: int, workers: int | None = None,
) -> Iterator[tuple[list[int], np.ndarray | None, list[list[str]]]]:
    """Per batch of files: (positions of the decoded ones, their uint8 (n, size, size, 3) images or
    None, failure rows [id, path, reason, detail]). Decoding runs on a few threads (Pillow releases
    the GIL); only one batch of decoded images is held at a time."""
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        for start in range(0, len(collection), batch_size):
            chunk = range(start, min(start + batch_size, len(collection)))
            positions, arrays, failures = [], [], []
            for i, (array, failure) in zip(chunk, pool.map(lambda i: _decode(collection.paths[i], size), chunk),
                                           strict=True):
                if failure is None:
                    positions.append(i)
                    arrays.append(array)
                else:
                    failures.append([collection.ids[i], str(collection.paths[i]), *failure])
            yield positions, (np.stack(arrays) if arrays else None), failures
