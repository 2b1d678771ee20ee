"""`data=folder`: a folder of your own photos as a prepare source.

What is taken (data.root, walked recursively, sorted by path):
    labels=folders  root/<class>/**/<file>: torchvision's ImageFolder convention; class ids 0..n-1 by
                    sorted class name; a file directly in root has no class and is skipped
    labels=csv      data.csv lists `path` (relative to root) and `label` columns; class ids by sorted label
                    (numerically when every label is a whole number)
    labels=none     every image, unlabelled (landmark_id -1, as embed images= collections)
Image files are those with a suffix in images.IMAGE_SUFFIXES, in any case. Skipped, each with its
reason in failures.csv: hidden files and folders (a name starting with "."), FIFOs, devices and other
non-regular files, symlinks that resolve outside root (those inside are followed, each folder once),
files over data.http.max_bytes, other suffixes.

Ids: the first 16 hex digits of the sha256 of the file's bytes, so the same photo has the same id
wherever it lies, and the same folder prepared twice gives the same ids. Byte-identical files share an
id: the first by sorted path is kept, the others listed in duplicates.csv (id, path, kept).

Split, from a hash of (seed, id) per image rather than a permutation, so that adding photos moves no
earlier photo: u = sha256("<seed>:test:<id>"), v = sha256("<seed>:val:<id>"), each as a number in [0, 1).
An image is test when u < test_fraction; otherwise val when v < val_fraction; otherwise train. Labelled,
each class of at least MIN_CLASS images keeps at least one test image: where none has u < test_fraction,
its image of smallest u is test. (That one is the only image a later addition can move: a new photo of
that class that hashes smaller, or into the fraction, takes its place, and it goes to val or train by v.)
Smaller classes stay whole in train, reported in one log line.

Paths: a file's path relative to root is kept in splits.csv's `file` column with `%` and every byte that is
not printable UTF-8 (a non-UTF-8 name) percent-encoded, so it reads back to the exact bytes; failures.csv
and duplicates.csv record names as text, non-UTF-8 bytes as \\xNN (output.printable).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landmark_ae.data.images import IMAGE_SUFFIXES, ImageError
from landmark_ae.errors import UserError
from landmark_ae.output import printable

log = logging.getLogger(__name__)

LABELS = ("folders", "csv", "none")
UNLABELLED = -1  # as retrieval.embed_run.UNLABELLED: the landmark_id of an image without one
MIN_CLASS = 2  # images a class needs to give a test image and keep one in the database (the seed's rule)
CLASS_COLUMNS = ["id", "name", "count"]
DUPLICATE_COLUMNS = ["id", "path", "kept"]
HASH_BLOCK = 1 << 20


@dataclass
class Candidate:
    """A file found under root: its path relative to root (os-native str, surrogate-escaped) and label name."""

    rel: str
    label: str | None


@dataclass
class FolderSample:
    rows: pd.DataFrame  # id, url (""), landmark_id, file (percent-encoded relative path), split
    rejected: pd.DataFrame  # id, landmark_id, reason, detail (the path): what was skipped
    classes: pd.DataFrame  # id, name, count (images found, duplicates counted once; decode failures are in failures.csv)
    duplicates: pd.DataFrame  # id, path, kept


def encode_rel(rel: str) -> str:
    """A relative path (surrogate-escaped str) as splits.csv's text: `%`, control characters and
    undecodable bytes percent-encoded; everything else as it is."""
    out = []
    for ch in rel:
        code = ord(ch)
        if ch == "%" or code < 0x20 or code == 0x7F:
            out.append(f"%{code:02X}")
        elif 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for a raw byte
            out.append(f"%{code - 0xDC00:02X}")
        else:
            out.append(ch)
    return "".join(out)


def decode_rel(text: str) -> str:
    """encode_rel's inverse: the os-native (surrogate-escaped) relative path."""
    return os.fsdecode(urllib.parse.unquote_to_bytes(text))


def _skip(rejected: list[dict], rel: str, reason: str, detail: str = "") -> None:
    shown = printable(rel)
    rejected.append({"id": "", "landmark_id": "", "reason": reason, "detail": f"{shown}: {detail}" if detail else shown})


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def walk(root: Path, rejected: list[dict]) -> list[str]:
    """Image files under root (relative, sorted), by the rules in the module's docstring; skips into rejected."""
    root_real = os.path.realpath(root)
    found: list[str] = []
    seen_dirs = {root_real}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = sorted(os.scandir(os.path.join(root, rel_dir)), key=lambda e: e.name)
        except OSError as exc:
            _skip(rejected, rel_dir, "unreadable", exc.strerror or str(exc))
            continue
        for entry in entries:
            rel = os.path.join(rel_dir, entry.name) if rel_dir else entry.name
            if entry.name.startswith("."):
                _skip(rejected, rel, "hidden")
                continue
            if entry.is_symlink() and not _inside(real := os.path.realpath(entry.path), root_real):
                _skip(rejected, rel, "symlink_outside_root", printable(real))
                continue
            try:
                mode = entry.stat().st_mode  # follows a symlink: it is judged by what it names
            except OSError as exc:
                _skip(rejected, rel, "missing", exc.strerror or str(exc))
                continue
            if stat.S_ISDIR(mode):
                # a folder reached twice (a symlink inside root) is walked once
                if (real := os.path.realpath(entry.path)) not in seen_dirs:
                    seen_dirs.add(real)
                    stack.append(rel)
                else:
                    _skip(rejected, rel, "folder_listed_twice", f"the same folder as {printable(real)}")
            elif not stat.S_ISREG(mode):
                _skip(rejected, rel, "not_a_file", "not a regular file (FIFO, device or socket)")
            elif os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
                _skip(rejected, rel, "not_an_image_suffix")
            else:
                found.append(rel)
    return sorted(found)


def _class_of_folder(rel: str) -> str | None:
    parts = rel.split(os.sep)
    return parts[0] if len(parts) > 1 else None


def candidates_from_folders(root: Path, labels: str, rejected: list[dict]) -> list[Candidate]:
    out = []
    for rel in walk(root, rejected):
        if labels == "none":
            out.append(Candidate(rel, None))
        elif (name := _class_of_folder(rel)) is None:
            _skip(rejected, rel, "no_class_folder", "labels=folders takes root/<class>/**/<file>")
        else:
            out.append(Candidate(rel, name))
    return out


def candidates_from_csv(root: Path, csv_path: Path, rejected: list[dict]) -> list[Candidate]:
    """The files data.csv lists (path, label), each checked as walk() checks a file (but any suffix)."""
    if not csv_path.is_file():
        raise UserError(f"data.csv={csv_path} not found: a CSV with path and label columns (paths relative to data.root)")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"data.csv={csv_path} is not a readable CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise UserError(f"data.csv={csv_path} has no {'/'.join(missing)} column (found: {', '.join(table.columns)}): "
                        "expected path,label with paths relative to data.root")
    root_real = os.path.realpath(root)
    out = []
    for rel, label in zip(table["path"].str.strip(), table["label"].str.strip(), strict=True):
        full = os.path.join(root, rel)
        if not rel or os.path.isabs(rel) or not _inside(os.path.realpath(full), root_real):
            _skip(rejected, rel, "outside_root", "paths in data.csv are relative to data.root and inside it")
        elif not label:
            _skip(rejected, rel, "no_label")
        elif not os.path.exists(full):
            _skip(rejected, rel, "missing")
        elif not stat.S_ISREG(os.stat(full).st_mode):
            _skip(rejected, rel, "not_a_file", "not a regular file")
        else:
            out.append(Candidate(os.path.normpath(rel), label))
    return out


def file_id(path: str, max_bytes: int) -> str:
    """The first 16 hex digits of the sha256 of the file's bytes; ImageError if unreadable or too big."""
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            raise ImageError("too_big", f"{size} bytes > data.http.max_bytes={max_bytes}")
        if size == 0:
            raise ImageError("empty")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(HASH_BLOCK):
                digest.update(block)
    except OSError as exc:
        raise ImageError("unreadable", exc.strerror or str(exc)) from None
    return digest.hexdigest()[:16]


def hash_ids(root: Path, found: list[Candidate], max_bytes: int, workers: int,
             rejected: list[dict]) -> list[tuple[Candidate, str]]:
    """(candidate, id) of each readable file, in found's order (hashing is I/O: threads)."""

    def one(c: Candidate) -> str | ImageError:
        try:
            return file_id(os.path.join(root, c.rel), max_bytes)
        except ImageError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        ids = list(pool.map(one, found))
    out = []
    for c, got in zip(found, ids, strict=True):
        if isinstance(got, ImageError):
            _skip(rejected, c.rel, got.reason, got.detail)
        else:
            out.append((c, got))
    return out


def unit_hash(seed: int, what: str, image_id: str) -> float:
    """sha256("<seed>:<what>:<id>") as a number in [0, 1): the same for an image wherever it is listed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{what}:{image_id}".encode()).digest()[:8], "big") / 2.0**64


def hash_split(rows: pd.DataFrame, test_fraction: float, val_fraction: float, seed: int, labelled: bool) -> pd.DataFrame:
    """Add `split` by the module's rule; returns rows sorted by (landmark_id, id)."""
    rows = rows.sort_values(["landmark_id", "id"], kind="mergesort").reset_index(drop=True)
    u = np.array([unit_hash(seed, "test", i) for i in rows["id"]])
    v = np.array([unit_hash(seed, "val", i) for i in rows["id"]])
    split = np.where(u < test_fraction, "test", np.where(v < val_fraction, "val", "train")).astype(object)
    small: list[str] = []
    if labelled:
        for label, index in rows.groupby("landmark_id", sort=True).indices.items():
            if len(index) < MIN_CLASS:
                split[index] = "train"
                small.append(str(label))
            elif test_fraction > 0 and not (split[index] == "test").any():
                split[index[np.argmin(u[index])]] = "test"
    rows = rows.assign(split=split)
    if small:
        rows.attrs["small_classes"] = small
    return rows


def class_table(found: list[tuple[Candidate, str]]) -> dict[str, int]:
    """Class name -> id 0..n-1 by sorted name (numerically when every name is a whole number)."""
    names = sorted({c.label for c, _ in found if c.label is not None})
    if names and all(n.lstrip("-").isdigit() for n in names):
        names.sort(key=int)
    return {name: i for i, name in enumerate(names)}


def dedupe(found: list[tuple[Candidate, str]]) -> tuple[list[tuple[Candidate, str]], pd.DataFrame]:
    """The first file of each id by sorted path; the others as duplicates.csv's rows."""
    kept: dict[str, Candidate] = {}
    dups = []
    for c, image_id in sorted(found, key=lambda t: t[0].rel):
        if image_id in kept:
            dups.append({"id": image_id, "path": printable(c.rel), "kept": printable(kept[image_id].rel)})
        else:
            kept[image_id] = c
    return [(c, i) for i, c in kept.items()], pd.DataFrame(dups, columns=DUPLICATE_COLUMNS)


def sample_folder(data: Any, workers: int) -> FolderSample:
    """The folder's images, labelled as data.labels says, deduplicated and split (see the module's docstring)."""
    labels = str(data.labels)
    if labels not in LABELS:
        raise UserError(f"data.labels={labels}: use one of {', '.join(LABELS)}")
    root = check_root(data.root)
    rejected: list[dict] = []
    if labels == "csv":
        if not data.csv:
            raise UserError("data.labels=csv needs data.csv=<file> with path and label columns (paths relative to data.root)")
        found = candidates_from_csv(root, Path(str(data.csv)).expanduser(), rejected)
    else:
        found = candidates_from_folders(root, labels, rejected)
    hashed, duplicates = dedupe(hash_ids(root, found, int(data.http.max_bytes), workers, rejected))
    ids = class_table(hashed)
    rows = pd.DataFrame({
        "id": [i for _, i in hashed],
        "url": "",
        "landmark_id": np.array([UNLABELLED if c.label is None else ids[c.label] for c, _ in hashed], dtype=np.int64),
        "file": [encode_rel(c.rel) for c, _ in hashed],
    })
    if rows.empty:
        raise UserError(f"no images found under data.root={root} (labels={labels}): expected "
                        + ("root/<class>/<file>" if labels == "folders" else "image files") + f" with a suffix in "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))}; see the skips in failures.csv")
    rows = hash_split(rows, float(data.test_fraction), float(data.val_fraction), int(data.seed), labels != "none")
    counts = rows["landmark_id"].value_counts()
    classes = pd.DataFrame([{"id": i, "name": n, "count": int(counts.get(i, 0))} for n, i in ids.items()],
                           columns=CLASS_COLUMNS)
    _log_sample(rows, classes, duplicates, rejected, root)
    return FolderSample(rows, pd.DataFrame(rejected, columns=["id", "landmark_id", "reason", "detail"]), classes, duplicates)


def _log_sample(rows: pd.DataFrame, classes: pd.DataFrame, duplicates: pd.DataFrame, rejected: list[dict],
                root: Path) -> None:
    log.info("found %d images in %s (%s), %d duplicates (duplicates.csv), %d skipped (failures.csv)", len(rows), root,
             f"{len(classes)} classes" if len(classes) else "unlabelled", len(duplicates), len(rejected))
    small = rows.attrs.get("small_classes")
    if small:
        names = classes.set_index("id")["name"]
        shown = ", ".join(str(names.get(int(s), s)) for s in small[:10]) + (" ..." if len(small) > 10 else "")
        log.info("%d classes have fewer than %d images (%s): all kept in train, never queried", len(small), MIN_CLASS, shown)


def check_root(root: Any) -> Path:
    if not root:
        raise UserError("data.root is required for data=folder: the folder holding your photos (root/<class>/<file>)")
    path = Path(str(root)).expanduser().absolute()  # recorded in dataset.json: where the photos are
    if not path.is_dir():
        raise UserError(f"data.root={path} is not a folder: point it at the folder holding your photos")
    return path


def folder_fetch(root: Path, max_bytes: int):
    """prepare's Fetch for this source: a row's file under root (decoded from splits.csv's `file`),
    checked again as the listing checked it (a regular file, not over max_bytes): it may have changed since."""

    def fetch(row: Any) -> Path:
        path = root / decode_rel(str(row.file))
        try:
            st = os.stat(path)
        except OSError:
            raise ImageError("missing", printable(path)) from None
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("not_a_file", printable(path))
        if st.st_size > max_bytes:
            raise ImageError("too_big", f"{st.st_size} bytes > data.http.max_bytes={max_bytes}")
        return path

    return fetch


def write_folder_sample(cfg: Any, run_dir: Path, splits_path: Path, rejected_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """prepare's sample_and_split for this source: the listing's classes.csv, duplicates.csv, the
    distribution figure, rejected.csv, and last splits.csv (its presence means the split is final)."""
    from landmark_ae.figures import plot_distribution
    from landmark_ae.runs import atomic_path

    sample = sample_folder(cfg.data, int(cfg.workers))
    for name, table in (("classes.csv", sample.classes), ("duplicates.csv", sample.duplicates),
                        (rejected_path.name, sample.rejected)):
        with atomic_path(run_dir / name) as tmp:
            table.to_csv(tmp, index=False)
    counts = sample.rows["landmark_id"].value_counts().to_numpy()
    plot_distribution(counts, counts, run_dir / "figure1_distribution.png", f"{cfg.data.name}: images per class")
    with atomic_path(splits_path) as tmp:
        sample.rows.to_csv(tmp, index=False)
    return sample.rows, sample.rejected
