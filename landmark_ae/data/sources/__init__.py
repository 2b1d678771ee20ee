"""Where prepare takes image bytes from: a local folder, http (aiohttp), tar shards, or the built-in generator.

Every source is a function from the rows still to do to an iterable of
(row, encoded bytes | local path | ImageError); prepare does the rest the same way for all of them.
The modules behind each source are imported only when that source is chosen.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from omegaconf import DictConfig, OmegaConf

from landmark_ae.data.images import NOT_A_FILE, ImageError
from landmark_ae.errors import UserError

# Fetch(row) -> the encoded image bytes or a local path; raises ImageError for a failed fetch.
Fetch = Callable[[Any], "bytes | Path"]
# A source: the rows still to do -> (row, encoded bytes | local path | ImageError), any order.
# A row it never yields fails as `missing`.
Results = Callable[[list], Iterable[tuple[Any, "bytes | Path | ImageError"]]]

# Failures that a rerun does not fetch again (they are reported again from the journal).
PERMANENT_HTTP = frozenset({"http_404", "http_410", "bad_url", "not_an_image", "too_large"})
# In a verified (md5-checked) shard, a bad member stays bad.
PERMANENT_TAR = frozenset({"not_an_image", "corrupt", "empty", "too_large", "too_big"})


def gldv2_image_path(root: Path, image_id: str) -> Path:
    """GLDv2's extracted-archive layout: images/a/b/c/<id>.jpg (id already validated as hex)."""
    return root / "images" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def resolve_source(cfg: DictConfig, run_dir: Path, progress: bool = True) -> tuple[Path | None, Path]:
    """(images root, train.csv) for the configured source; generates the built-in data if asked."""
    data = cfg.data
    if data.source == "synthetic":
        root = run_dir / "source"
        return root, generate_synthetic(data, root, progress)
    if data.source in ("http", "tar"):
        return (Path(data.root).expanduser() if data.root else None), resolve_csv(cfg, run_dir, progress)
    if data.source == "folder":  # your own photos (sources/folder.py): listed and split by sample_and_split
        from landmark_ae.data.sources.folder import check_root

        root = check_root(data.root)
        return root, Path(data.csv).expanduser() if data.csv else root
    if data.root is None:
        raise UserError("data.root is required: the folder holding GLDv2's images/ (and train.csv)")
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise UserError(f"data.root {root} does not exist: point it at a folder holding images/a/b/c/<id>.jpg")
    csv_path = Path(data.csv).expanduser() if data.csv else root / "train.csv"
    return root, csv_path


def generate_synthetic(data: DictConfig, out_dir: Path, progress: bool = True) -> Path:
    """Generate the built-in dataset data.synthetic describes into out_dir (GLDv2's layout), landmark
    ids from data.landmark_min; returns its train.csv."""
    from landmark_ae.data.sources.synthetic import SyntheticSpec, generate
    from landmark_ae.ui import progress_bar

    s = data.synthetic
    spec = SyntheticSpec(
        n_landmarks=s.n_landmarks, n_images=s.n_images, min_per_landmark=s.min_per_landmark,
        width=s.width, height=s.height, first_landmark_id=data.landmark_min, seed=s.seed,
    )
    with progress_bar(progress) as bar:
        task = bar.add_task("generate synthetic landmarks", total=spec.n_images, status="")
        try:
            csv_path = generate(out_dir, spec, progress=lambda done, total: bar.update(task, completed=done))
        except ValueError as exc:
            raise UserError(f"data.synthetic: {exc}") from None
    return Path(csv_path)


def resolve_csv(cfg: DictConfig, run_dir: Path, progress: bool = True) -> Path:
    """train.csv for the http/tar sources: a local path, or a URL streamed to <run dir>/source/train.csv."""
    from landmark_ae.data.sources.http import download_file, is_url

    data = cfg.data
    if data.csv:
        if is_url(data.csv):
            if (run_dir / "splits.csv").is_file():  # already sampled: the CSV is not read again
                return run_dir / "source" / "train.csv"
            return download_file(str(data.csv), run_dir / "source" / "train.csv", OmegaConf.to_object(data.http), progress)
        if "://" in str(data.csv):
            raise UserError(f"data.csv={data.csv}: only http(s) URLs or local paths are supported")
        return Path(data.csv).expanduser()
    if data.root:
        return Path(data.root).expanduser() / "train.csv"
    raise UserError(f"data.csv is required for source={data.source}: GLDv2's train.csv, a local path or an http(s) URL")


def local_fetch(root: Path, max_bytes: int) -> Fetch:
    """Local files, capped like downloads (data.http.max_bytes), by size before anything is read."""

    def fetch(row: Any) -> Path:
        path = gldv2_image_path(root, row.id)
        try:
            st = os.stat(path)
        except OSError as exc:
            if exc.errno not in NOT_A_FILE:
                raise
            raise ImageError("missing", str(path)) from None
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("missing", str(path))
        size = st.st_size
        if size > max_bytes:
            raise ImageError("too_big", f"{size} bytes > data.http.max_bytes={max_bytes}")
        return path

    return fetch


def fetch_results(fetch: Fetch) -> Results:
    """A Fetch function (one row at a time, synchronous) as a source."""

    def results(todo: list) -> Iterator[tuple[Any, Any]]:
        for row in todo:
            try:
                yield row, fetch(row)
            except ImageError as exc:
                yield row, exc

    return results


def make_source(cfg: DictConfig, root: Path | None, run_dir: Path) -> tuple[Results, frozenset[str], Any]:
    """(results, permanent reasons, the tar source or None) for data.source."""
    data = cfg.data
    if data.source == "http":
        from landmark_ae.data.sources.http import http_results

        settings = OmegaConf.to_object(data.http)
        return (lambda todo: http_results(todo, settings)), PERMANENT_HTTP, None
    if data.source == "tar":
        from landmark_ae.data.sources.tar import TarSource

        t = data.tar
        tar = TarSource(t.base, None if t.shards is None else list(t.shards), t.retries, t.concurrency,
                        data.http.max_bytes, data.http.user_agent, data.http.read_timeout, run_dir)
        return tar.results, PERMANENT_TAR, tar
    assert root is not None
    if data.source == "folder":
        from landmark_ae.data.sources.folder import folder_fetch

        return fetch_results(folder_fetch(root, data.http.max_bytes)), frozenset(), None
    return fetch_results(local_fetch(root, data.http.max_bytes)), frozenset(), None
