"""prepare (landmark_ae/data/prepare.py) on small generated GLDv2-layout sources: failures dropped and
counted, arrays equal to the stored files, resumable after kill -9, two runs never collide."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, results, run_cli, run_in_process
from PIL import Image

from landmark_ae.data.sources import gldv2_image_path
from landmark_ae.data.sources.synthetic import SyntheticSpec, generate
from landmark_ae.errors import UserError


@pytest.fixture
def damaged_source(tiny_source: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of tiny_source with one missing, one truncated and one non-image file."""
    root = tmp_path / "source"
    shutil.copytree(tiny_source, root)
    ids = pd.read_csv(root / "train.csv", dtype={"id": str})["id"].tolist()
    missing, truncated, garbage = ids[5], ids[17], ids[40]
    gldv2_image_path(root, missing).unlink()
    path = gldv2_image_path(root, truncated)
    path.write_bytes(path.read_bytes()[:300])
    gldv2_image_path(root, garbage).write_bytes(b"<html>not found</html>")
    return root, {missing: "missing", truncated: "corrupt", garbage: "not_an_image"}


def test_prepare_cli_prints_results_and_records_the_run(tiny_prepare_cli, tiny_prepared):
    res = results(tiny_prepare_cli)
    assert all("\t" in line for line in tiny_prepare_cli.stdout.splitlines())  # stdout: results only
    assert {"run_dir", "train", "val", "test", "failed"} <= set(res) and res["failed"] == "0"
    assert tiny_prepared.parent.name == "prepare"
    for split in ("train", "val", "test"):
        assert int(res[split]) == len(pd.read_csv(tiny_prepared / f"{split}.csv"))
    assert sum(int(res[s]) for s in ("train", "val", "test")) == 120
    assert json.loads((tiny_prepared / "run.json").read_text())["status"] == "complete"
    assert (tiny_prepared / ".hydra" / "config.yaml").is_file() and (tiny_prepared / "prepare.log").is_file()


def test_prepare_drops_and_counts_bad_images_and_writes_dataset(damaged_source, tmp_path):
    root, bad = damaged_source
    run_dir = tmp_path / "run"
    args = ["data=gldv2", f"data.root={root}", "progress=false"]
    res = run_in_process("prepare", *args, run_dir=run_dir)
    assert res["failed"] == 3
    assert res["failed_missing"] == 1 and res["failed_corrupt"] == 1 and res["failed_not_an_image"] == 1
    failures = pd.read_csv(run_dir / "failures.csv", dtype={"id": str})
    assert dict(zip(failures["id"], failures["reason"], strict=True)) == bad

    total = 0
    for split in ("train", "val", "test"):
        manifest = pd.read_csv(run_dir / f"{split}.csv", dtype={"id": str})
        array = np.load(run_dir / f"{split}.npy")
        assert array.shape == (len(manifest), 96, 96, 3) and array.dtype == np.uint8
        assert not set(manifest["id"]) & set(bad)
        assert (manifest["width"] == 160).all() and (manifest["height"] == 120).all()
        # the array row is the stored file, decoded
        first = np.asarray(Image.open(run_dir / manifest["path"][0]).convert("RGB"))
        assert np.array_equal(first, array[0])
        assert res[split] == len(manifest)
        total += len(manifest)
    assert total == 120 - 3
    summary = json.loads((run_dir / "dataset.json").read_text())
    assert summary["counts"]["test"] >= 6  # at least one test image per landmark
    assert summary["failed"] == 3 and summary["failure_reasons"] == {"corrupt": 1, "missing": 1, "not_an_image": 1}
    assert (run_dir / "figure1_distribution.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"

    # a rerun in the same dir redoes nothing finished; the failures are tried again (and fail again)
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("train/*.jpg")}
    again = run_in_process("prepare", *args, f"resume={run_dir}", run_dir=run_dir)
    assert again["failed"] == 3 and again["train"] == res["train"]
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("train/*.jpg")} == before


def test_two_runs_never_collide(tmp_path, outputs):
    root = tmp_path / "src"
    generate(root, SyntheticSpec(n_landmarks=2, n_images=12, min_per_landmark=4, seed=5))
    procs = [subprocess.Popen([sys.executable, "-m", "landmark_ae", "prepare", "data=gldv2", f"data.root={root}",
                               "progress=false"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    dirs = {dict(line.split("\t") for line in o[0].splitlines())["run_dir"] for o in outs}
    assert len(dirs) == 2 and all(Path(d).parent == outputs / "prepare" for d in dirs)


def _start_and_stop(args: list[str], outputs: Path, sig: int, after_lines: int) -> tuple[int, str, Path]:
    """Start `landmark-ae <args>`, send `sig` once its journal holds more than `after_lines` images."""
    proc = subprocess.Popen([sys.executable, "-m", "landmark_ae", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, text=True)
    deadline = time.time() + 120
    journal = None
    while time.time() < deadline and proc.poll() is None:
        found = list((outputs / "prepare").glob("*/done.log")) if (outputs / "prepare").exists() else []
        if found and len(found[0].read_text().splitlines()) > after_lines:
            journal = found[0]
            break
        time.sleep(0.01)
    assert journal is not None and proc.poll() is None, "prepare finished before it could be stopped"
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr, journal.parent


def test_stopped_prepare_resumes_from_its_own_config_without_half_written_images(tmp_path, outputs):
    root = tmp_path / "src"
    generate(root, SyntheticSpec(n_landmarks=5, n_images=400, min_per_landmark=5, seed=9))
    args = ["prepare", "data=gldv2", f"data.root={root}", "progress=false", "workers=1"]

    # SIGTERM (kill, schedulers): handled like Ctrl-C, one line with the resume hint, exit 143.
    code, stderr, run_dir = _start_and_stop(args, outputs, signal.SIGTERM, 40)
    assert code == 143, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"landmark-ae prepare: interrupted; finished work is kept: continue with resume={run_dir}")
    assert "Traceback" not in stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert not list(run_dir.rglob("*.tmp"))

    # kill -9 of the resumed run: nothing can be cleaned up then; the next resume does it.
    _, _, again = _start_and_stop(["prepare", f"resume={run_dir}", "progress=false"], outputs, signal.SIGKILL, 120)
    assert again == run_dir and json.loads((run_dir / "run.json").read_text())["status"] == "running"
    for jpg in run_dir.glob("*/*.jpg"):  # whatever exists is whole
        Image.open(jpg).load()
    (run_dir / "train" / ".left.jpg.abc.tmp").write_bytes(b"partial")  # as a kill mid-write leaves it

    # `resume=` alone: the run's own data config (data=gldv2, its root), not the default synthetic data.
    resumed = run_cli("prepare", f"resume={run_dir}", "progress=false", outputs=outputs)
    assert resumed.returncode == 0, resumed.stderr
    assert results(resumed)["run_dir"] == str(run_dir) and results(resumed)["failed"] == "0"
    assert json.loads((run_dir / "run.json").read_text())["data"] == "gldv2"
    assert not (run_dir / "source").exists()  # no synthetic data generated into it
    assert not list(run_dir.rglob("*.tmp"))  # no partial file of the killed run is left
    # the same as a run that was never interrupted
    fresh_dir = tmp_path / "fresh"
    run_in_process(*args, run_dir=fresh_dir)
    for split in ("train", "val", "test"):
        assert np.array_equal(np.load(run_dir / f"{split}.npy"), np.load(fresh_dir / f"{split}.npy"))
        assert (run_dir / f"{split}.csv").read_text() == (fresh_dir / f"{split}.csv").read_text()


def test_prepare_bad_inputs(tmp_path, tiny_source):
    def err(*args: str) -> str:
        with pytest.raises(UserError) as info:
            run_in_process("prepare", "progress=false", *args, run_dir=tmp_path / "run")
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "does not exist" in err("data=gldv2", f"data.root={tmp_path / 'nowhere'}")
    assert "empty landmark_id range" in err("data=gldv2", f"data.root={tiny_source}", "data.landmark_min=5",
                                            "data.landmark_max=5")
    assert "no usable rows" in err("data=gldv2", f"data.root={tiny_source}", "data.landmark_min=0", "data.landmark_max=5")
    (tmp_path / "bad.csv").write_text("image,landmark\na,1\n")
    assert "no id/landmark_id column" in err("data=gldv2", f"data.root={tiny_source}", f"data.csv={tmp_path / 'bad.csv'}")
    assert not list(tmp_path.rglob("*.npy"))


def test_local_images_are_capped_by_size_before_they_are_read(tiny_source, tmp_path):
    from landmark_ae.data.images import ImageError
    from landmark_ae.data.sources import local_fetch

    row = pd.read_csv(tiny_source / "train.csv", dtype={"id": str}).iloc[0]
    path = gldv2_image_path(tiny_source, row["id"])
    assert local_fetch(tiny_source, path.stat().st_size)(row) == path
    with pytest.raises(ImageError) as info:
        local_fetch(tiny_source, path.stat().st_size - 1)(row)
    assert info.value.reason == "too_big" and "data.http.max_bytes" in info.value.detail


def _stored_images(source: Path, tmp_path: Path, n: int, size: int) -> list[Path]:
    from landmark_ae.data.images import resized_jpeg

    (tmp_path / "stored").mkdir()
    paths = []
    for src in sorted(source.glob("images/*/*/*/*.jpg"))[:n]:
        paths.append(tmp_path / "stored" / src.name)
        paths[-1].write_bytes(resized_jpeg(src, size)[0])
    return paths


@pytest.mark.parametrize("n", [0, 1, 11])
def test_arrays_written_a_chunk_at_a_time_equal_np_save_of_the_whole_array(tiny_source, tmp_path, monkeypatch, n):
    """write_array_file (open_memmap, chunked, atomic) writes the very bytes np.save wrote of the array held
    whole, across chunk boundaries, with two decode threads; no temp file is left; an old file is replaced."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from landmark_ae.data import prepare

    monkeypatch.setattr(prepare, "NPY_CHUNK", 4)  # 11 rows: chunks of 4, 4 and 3
    paths = _stored_images(tiny_source, tmp_path, n, 24)
    whole = np.zeros((n, 24, 24, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        whole[i] = np.asarray(Image.open(p).convert("RGB"))
    expected = io.BytesIO()
    np.save(expected, whole)
    dest = tmp_path / "train.npy"
    dest.write_bytes(b"an older file")
    with ThreadPoolExecutor(2) as pool:
        prepare.write_array_file(dest, paths, 24, pool, workers=2)
    assert dest.read_bytes() == expected.getvalue()
    assert not list(tmp_path.rglob("*.tmp"))


def test_process_rows_batches_any_source_order_duplicates_errors_and_gaps(tiny_source, tmp_path):
    """A source yielding rows in reverse, one twice, one as an error and one never: every other row is
    stored and journaled once, the error and the gap are failures, nothing is held as arrays."""
    from landmark_ae.data.images import ImageError
    from landmark_ae.data.journal import read_journal
    from landmark_ae.data.prepare import process_rows
    from landmark_ae.data.sources import fetch_results, local_fetch

    rows = pd.read_csv(tiny_source / "train.csv", dtype={"id": str}).head(40).assign(split="train")
    ids = rows["id"].tolist()
    local = fetch_results(local_fetch(tiny_source, 10**7))

    def results(todo):
        items = list(local(todo))[::-1]
        for row, result in items:
            if row.id == ids[0]:
                yield row, ImageError("http_500", "flaky")
            elif row.id != ids[1]:
                yield row, result
        yield items[5]  # again: ignored

    stored, failures = process_rows(rows, tmp_path, results, 32, 90, workers=2, progress=False)
    assert set(stored) == set(ids[2:]) and all(v == (160, 120) for v in stored.values())
    assert {f["id"]: f["reason"] for f in failures} == {ids[0]: "http_500", ids[1]: "missing"}
    assert read_journal(tmp_path / "done.log") == stored
    assert len((tmp_path / "done.log").read_text().splitlines()) == len(stored)
    assert sorted(p.stem for p in (tmp_path / "train").iterdir()) == sorted(ids[2:])
    assert not list(tmp_path.rglob("*.tmp"))
    # a rerun has only the failures to do
    again, failures = process_rows(rows, tmp_path, local, 32, 90, workers=2, progress=False)
    assert set(again) == {ids[0], ids[1]} and not failures


def test_prepare_does_not_import_torch():
    """prepare's start stays light: its module imports no torch (1.5 s of CPU for nothing); the split
    names are the torch-free common module's, as the prepared-dataset reader's are."""
    from landmark_ae import common
    from landmark_ae.data import prepare

    assert prepare.SPLITS is common.SPLITS
    code = ("import sys, landmark_ae.data.prepare; assert 'torch' not in sys.modules; "
            "import landmark_ae.common, landmark_ae.data.prepared as p; assert p.SPLITS is landmark_ae.common.SPLITS")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_local_paths_that_are_not_files_are_missing(tmp_path):
    from types import SimpleNamespace

    from landmark_ae.data.images import ImageError
    from landmark_ae.data.sources import local_fetch

    folder = tmp_path / "images" / "a" / "b" / "c"
    folder.mkdir(parents=True)
    (folder / "abc1.jpg").symlink_to(folder / "abc1.jpg")  # a loop
    (folder / "abc2.jpg").mkdir()
    for image_id in ("abc1", "abc2", "abc3"):
        with pytest.raises(ImageError) as info:
            local_fetch(tmp_path, 10**6)(SimpleNamespace(id=image_id))
        assert info.value.reason == "missing"
