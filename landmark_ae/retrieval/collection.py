"""Image collections, one rule for all: `embed images=`, `query image=` (a folder, paths) and `image=-`.

A collection is a folder, walked recursively (symlinked files are taken under their own name,
symlinked folders are not entered, so a link loop cannot recurse) for files whose suffix is an
image suffix in any case (data.images.IMAGE_SUFFIXES: `.jpg`, `.JPG`, ...), in a stable order
(sorted at each level); or a list of paths, one per line (an `embed images=` text file, relative
paths relative to its folder; `query image=-` reads them from stdin, relative to the working dir).

A list line (list_entry): LF or CRLF ends it; surrounding spaces and tabs and a UTF-8 byte-order mark
are dropped; a blank line or one starting with `#` names nothing; its bytes are the path's bytes, UTF-8
or not (os.fsdecode), so any file name on disk can be listed.

Reading one file (read_image_file, also what query reads): only a regular file, after following
symlinks (a directory, FIFO, device or socket is refused without being opened, and a FIFO swapped in
after that check cannot block: it is opened O_NONBLOCK and checked again), at most MAX_IMAGE_BYTES
(20 MiB, serve's max_body_mb default). A file that cannot be used (missing, not a regular file,
unreadable, over the byte cap, empty, not an image, truncated, too many pixels) is skipped with a
one-line warning and becomes a failure row (embed's failures.csv), never the collection's end.

Row ids are the file stems when all of them are unique and safe in a CSV field and on a command
line (letters, digits, `_`, `-`, `.`); otherwise every id is the first 16 hex digits of the sha1
of the bytes of the file's path relative to the folder (or to the list file's folder): stable
across runs. A path is recorded (index.csv, failures.csv, log lines) with a byte that is not UTF-8,
or a NUL, written `\\xNN` (landmark_ae.output.printable). Kept off pandas and torch.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator

import numpy as np

from landmark_ae.config import DataConfig
from landmark_ae.data.images import IMAGE_SUFFIXES, NOT_A_FILE, ImageError, resized_rgb
from landmark_ae.errors import UserError
from landmark_ae.output import printable
from landmark_ae.runs import read_json

log = logging.getLogger(__name__)

COLLECTION_FAILURE_COLUMNS = ["id", "path", "reason", "detail"]
SAFE_ID = re.compile(r"[A-Za-z0-9_.\-]+")
# The most bytes read of one image file: serve's max_body_mb default, the same cap on both paths.
MAX_IMAGE_BYTES = 20 * 2**20
LINE_SPACE = " \t\r\n\f\v"  # ASCII whitespace only: a name may end in a no-break space
BOM = "\ufeff"
FAILURE_TEXT = {"empty": "is empty", "corrupt": "is truncated or corrupt", "not_an_image": "is not an image",
                "too_large": "is too large", "missing": "does not exist", "not_a_file": "is {detail}, not a regular file",
                "unreadable": "cannot be read", "bad_path": "is not a usable path"}
DETAILED = {"corrupt", "too_large", "unreadable", "bad_path"}  # the detail follows the text
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

    def path_text(self, i: int) -> str:
        """The i-th path as it is recorded (index.csv, failures.csv): non-UTF-8 bytes as `\\xNN`."""
        return printable(self.paths[i])


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


def _kind(mode: int) -> str | None:
    """What a file that is not a regular one is ("a FIFO", ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def read_image_file(path: Path | str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of one image file, by the module's rule (a regular file, at most max_bytes), or an
    ImageError: missing, bad_path, not_a_file, unreadable, too_large, empty."""
    try:
        kind = _kind(os.stat(path).st_mode)  # follows symlinks: a link is judged by what it names
        if kind is not None:
            raise ImageError("not_a_file", kind)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb", closefd=True) as f:
            info = os.fstat(f.fileno())
            kind = _kind(info.st_mode)  # swapped for something else since the stat above
            if kind is not None:
                raise ImageError("not_a_file", kind)
            if info.st_size > max_bytes:
                raise ImageError("too_large", f"{info.st_size} bytes, over the {max_bytes // 2**20} MiB cap")
            data = f.read(max_bytes + 1)  # a /proc file may say 0 bytes and hold more
    except ValueError:  # os.stat's "embedded null byte"
        raise ImageError("bad_path", "its name holds a NUL byte") from None
    except OSError as exc:
        if exc.errno in NOT_A_FILE - {errno.EISDIR}:
            raise ImageError("missing") from None
        if exc.errno == errno.ENAMETOOLONG:
            raise ImageError("bad_path", "its name is too long") from None
        raise ImageError("unreadable", exc.strerror or str(exc)) from None
    if len(data) > max_bytes:
        raise ImageError("too_large", f"over the {max_bytes // 2**20} MiB cap")
    if not data:
        raise ImageError("empty")
    return data


def describe_failure(reason: str, detail: str = "") -> str:
    """What is wrong with a file, for a message: `is empty`, `is a FIFO, not a regular file`, ..."""
    what = FAILURE_TEXT.get(reason, reason)
    return f"{what}: {detail}" if detail and reason in DETAILED else what.format(detail=detail)


def image_files(folder: Path) -> list[Path]:
    """The image files under `folder` by the module's rule: recursively, suffix in any case, sorted
    at each level; a subfolder that cannot be listed is skipped with a warning."""
    found: list[Path] = []

    def skipped(exc: OSError) -> None:
        log.warning("skipped %s: %s", printable(exc.filename, controls=True), exc.strerror or exc)

    for top, dirs, files in os.walk(folder, onerror=skipped):
        dirs.sort()
        found.extend(Path(top, f) for f in sorted(files) if Path(f).suffix.lower() in IMAGE_SUFFIXES)
    return found


def list_entry(line: bytes | str) -> str | None:
    """The path one line of a list names (see the module docstring), or None for a blank or `#` line."""
    text = os.fsdecode(line) if isinstance(line, bytes) else line
    text = text.strip(LINE_SPACE)
    if text.startswith(BOM):
        text = text[len(BOM):].strip(LINE_SPACE)
    return text if text and not text.startswith("#") else None


def _listed(list_file: Path) -> list[Path]:
    """The paths a list file names, each once, relative ones relative to its folder."""
    base = list_file.parent
    paths = []
    for line in list_file.read_bytes().split(b"\n"):
        entry = list_entry(line)
        if entry is not None:
            paths.append(Path(os.path.abspath(base / Path(entry).expanduser())))
    unique = list(dict.fromkeys(paths))
    if len(unique) < len(paths):
        log.info("%s lists %d path(s) more than once: each is embedded once", printable(list_file, controls=True),
                 len(paths) - len(unique))
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
    # os.fsencode: a name's own bytes, UTF-8 or not (for UTF-8 names the same as .encode("utf-8"))
    return [hashlib.sha1(os.fsencode(_relative(p, base))).hexdigest()[:16] for p in paths]


def open_collection(given: str | Path) -> Collection:
    """List the collection `images=` names; one-line UserErrors for what cannot be one."""
    source = Path(os.path.abspath(Path(given).expanduser()))
    if source.is_dir():
        paths, base = image_files(source), source
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
    elif source.exists():
        raise UserError(f"images={given} is not a folder or a regular file: pass a folder of images or a text file "
                        "of image paths")
    else:
        raise UserError(f"images={given} does not exist: pass a folder of images or a text file of image paths")
    return Collection(source=source, paths=paths, ids=make_ids(paths, base))


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """(image, None) or (None, (reason, detail)): one file of a collection, as query reads it."""
    try:
        image, _ = resized_rgb(read_image_file(path), size)
        return np.asarray(image, dtype=np.uint8), None
    except ImageError as exc:
        return None, (exc.reason, exc.detail)
    except Exception as exc:  # a decoder's own error on a malformed file: one failure, not the run's end
        return None, ("corrupt", f"{type(exc).__name__}: {exc}")


def decode_batches(
    collection: Collection, size: int, batch_size: int, workers: int | None = None,
) -> Iterator[tuple[list[int], np.ndarray | None, list[list[str]]]]:
    """Per batch of files: (positions of the decoded ones, their uint8 (n, size, size, 3) images or
    None, failure rows [id, path, reason, detail], each also a warning line). Decoding runs on a few
    threads (Pillow releases the GIL); only one batch of decoded images is held at a time."""
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
                    failures.append([collection.ids[i], collection.path_text(i), *failure])
                    log.warning("skipped %s: it %s", printable(collection.paths[i], controls=True),
                                describe_failure(*failure))
            yield positions, (np.stack(arrays) if arrays else None), failures
