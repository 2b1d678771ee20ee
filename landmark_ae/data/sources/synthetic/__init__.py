"""Built-in synthetic landmark dataset, written in Google Landmarks v2's own formats.

Each landmark is a procedurally drawn scene (ground, distant background, one main
structure such as a dome, tower, gate, bridge or temple, and a few secondary
buildings) with its own palette, roof shapes and window pattern.  Each image is a
different "photo" of it: a random resized crop with a small camera roll, a sky that
depends on the weather / time of day, white-balance, exposure and contrast jitter,
sensor noise and sometimes a foreground occluder (tree, people, car, lamp post).
Image counts per landmark are long-tailed (Zipf-like), as in GLDv2.

Layout written into ``out_dir``::

    synthetic.json                 the spec (written first)
    images/<a>/<b>/<c>/<id>.jpg    RGB JPEGs, a, b, c = first three chars of the id
    landmarks.csv                  landmark_id,name
    train.csv                      id,url,landmark_id  (written last: it marks completion)

``url`` points at ``http://127.0.0.1:8000/<a>/<b>/<c>/<id>.jpg`` so that
``python -m http.server --directory <out_dir>/images`` serves the images.

Drawing uses only numpy and Pillow.  Every random draw comes from
``numpy.random.default_rng`` seeded from ``(spec.seed, stream, landmark[, image])``,
so output is byte-identical for a given spec and does not depend on the order in
which images are made.

Modules: ``spec`` (what to generate), ``recipes`` (palettes, landmark recipes, counts, ids),
``painter`` and ``structures`` (drawing), ``scene`` (a landmark's base scene), ``views`` and
``occluders`` (one photo of it); this module writes the files.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from landmark_ae.runs import write_bytes_atomic

from .recipes import _counts, _image_id, _landmarks
from .scene import _draw_base
from .spec import SyntheticSpec, _validate
from .views import _render_view, _Shared

__all__ = ["GENERATOR_VERSION", "SyntheticSpec", "generate"]

#: Bumped whenever the images a given spec produces change.
GENERATOR_VERSION = 1

_URL_PREFIX = "http://127.0.0.1:8000"
_DEFAULT_SPEC = SyntheticSpec()


def _remove_stale_tmp(path: Path) -> None:
    """Delete what a killed run left while writing ``path`` (runs.atomic_path's temp names)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _csv_bytes(header: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _meta(spec: SyntheticSpec) -> dict:
    return {
        "generator": "landmark_ae.data.sources.synthetic",
        "version": GENERATOR_VERSION,
        "spec": {k: int(v) for k, v in asdict(spec).items()},
    }


def _meta_bytes(spec: SyntheticSpec) -> bytes:
    return (json.dumps(_meta(spec), indent=2, sort_keys=True) + "\n").encode("utf-8")


def generate(
    out_dir: Path | str,
    spec: SyntheticSpec = _DEFAULT_SPEC,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the dataset into out_dir (created if needed) and return the path of train.csv.

    ``progress(done, total)`` is called once per image, in order, images already on disk
    included; nothing is printed.  Every file is written to a temporary name in its own
    folder and renamed; ``train.csv`` comes last, so its presence means the set is
    complete.  Idempotent: if the folder already holds this spec's complete dataset it
    returns at once (no progress calls); after an interrupted run it makes only the
    missing images.  Raises ValueError for an invalid spec, a folder whose
    synthetic.json records a different spec, or a train.csv without synthetic.json."""
    _validate(spec)
    out = Path(out_dir)
    train_csv = out / "train.csv"
    if _complete(out, spec):
        return train_csv
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "synthetic.json"
    resuming = meta_path.exists()
    if not resuming:
        _remove_stale_tmp(meta_path)
        write_bytes_atomic(meta_path, _meta_bytes(spec))
    landmarks = _landmarks(spec)
    rows = _write_images(out / "images", spec, landmarks, resuming, progress)
    rows.sort(key=lambda r: r[0])
    for name in ("landmarks.csv", "train.csv"):
        _remove_stale_tmp(out / name)
    write_bytes_atomic(
        out / "landmarks.csv",
        _csv_bytes(
            ["landmark_id", "name"],
            [[spec.first_landmark_id + lm.index, lm.name] for lm in landmarks],
        ),
    )
    write_bytes_atomic(train_csv, _csv_bytes(["id", "url", "landmark_id"], rows))
    return train_csv


def _complete(out: Path, spec: SyntheticSpec) -> bool:
    """Whether out already holds spec's complete dataset; ValueError if it holds another one (or a
    train.csv the generator did not write)."""
    train_csv, meta_path = out / "train.csv", out / "synthetic.json"
    if meta_path.exists():
        try:
            existing = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            existing = None
        if existing != _meta(spec):
            theirs = existing.get("spec") if isinstance(existing, dict) else None
            raise ValueError(
                f"{out} holds a different synthetic dataset ({meta_path.name}: {theirs}); "
                f"use another folder or delete it"
            )
        return train_csv.exists()
    if train_csv.exists():
        raise ValueError(
            f"{out} already has a train.csv that the synthetic generator did not write "
            f"(no synthetic.json); use another folder"
        )
    return False


def _write_images(
    images: Path, spec: SyntheticSpec, landmarks: list, resuming: bool,
    progress: Callable[[int, int], None] | None,
) -> list[list]:
    """Every image not yet on disk (write_bytes_atomic makes each one's a/b/c folders); returns the
    train.csv rows (id, url, landmark_id) of all of them, in generation order."""
    counts = _counts(spec)
    total = sum(counts)
    seen: set[str] = set()
    shared: _Shared | None = None
    rows: list[list] = []
    for lm, n in zip(landmarks, counts, strict=True):
        base = None
        landmark_id = spec.first_landmark_id + lm.index
        for k in range(n):
            attempt = 0
            image_id = _image_id(spec, lm.index, k)
            while image_id in seen:  # 64-bit ids: practically never
                attempt += 1
                image_id = _image_id(spec, lm.index, k, attempt)
            seen.add(image_id)
            a, b, c = image_id[0], image_id[1], image_id[2]
            rows.append([image_id, f"{_URL_PREFIX}/{a}/{b}/{c}/{image_id}.jpg", landmark_id])
            path = images / a / b / c / f"{image_id}.jpg"
            if not path.exists():
                if base is None:
                    base = _draw_base(spec, lm)
                if shared is None:
                    shared = _Shared.make(spec)
                if resuming:  # only a killed run leaves temp files; a fresh folder has none
                    _remove_stale_tmp(path)
                write_bytes_atomic(path, _render_view(spec, lm, base, k, shared))
            if progress is not None:
                progress(len(rows), total)
    return rows
