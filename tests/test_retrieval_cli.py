"""embed -> evaluate -> query end to end through the CLI, and the bad inputs of that half."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import run_cli, results
from landmark_ae.model.checkpoints import CHECKPOINT_FORMAT, load_checkpoint, model_from_checkpoint
from landmark_ae.retrieval.metrics import evaluate_embeddings


def outputs_of(run_dir: Path) -> Path:
    return run_dir.parent.parent


def one_line_error(proc: subprocess.CompletedProcess, *expected: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr


def test_embed_stores_float32_memmap_and_index(tiny_embedded, tiny_prepared, tiny_trained):
    emb = np.load(tiny_embedded / "embeddings.npy", mmap_mode="r")
    index = pd.read_csv(tiny_embedded / "index.csv", dtype={"id": str})
    meta = json.loads((tiny_embedded / "embed.json").read_text())
    assert emb.dtype == np.float32 and emb.shape == (len(index), 392)
    manifests = pd.concat([pd.read_csv(tiny_prepared / f"{s}.csv", dtype={"id": str}).assign(split=s)
                           for s in ("train", "val", "test")], ignore_index=True)
    assert list(index["id"]) == list(manifests["id"]) and list(index["split"]) == list(manifests["split"])
    assert all(Path(p).is_file() for p in index["path"])
    assert meta["train_run"] == str(tiny_trained.resolve()) and meta["data_dir"] == str(tiny_prepared.resolve())
    # row 0 is the model's bottleneck of the first prepared train image
    model = model_from_checkpoint(load_checkpoint(tiny_trained / "best.pt")).eval()
    image = np.load(tiny_prepared / "train.npy")[:1]
    x = torch.nn.functional.interpolate(torch.from_numpy(image).permute(0, 3, 1, 2).float(), size=92,
                                        mode="bilinear", antialias=True).round() / 127.5 - 1
    with torch.inference_mode():
        expected = model.embed(x).numpy()[0]
    assert np.allclose(emb[0], expected, atol=1e-4)


def test_evaluate_reports_model_and_pixel_baseline(tiny_embedded):
    proc = run_cli("evaluate", f"embed_run={tiny_embedded}", outputs=outputs_of(tiny_embedded))
    assert proc.returncode == 0, proc.stderr
    res = results(proc)
    metrics = json.loads((Path(res["run_dir"]) / "metrics.json").read_text())
    assert set(metrics["results"]) == {"m1", "pixels_11x11"}
    for kind in ("model", "pixels"):
        for m in ("nmi", "ri", "ari", "ami", "map@100", "p@1", "p@10", "recall@100"):
            assert 0.0 - 1e-9 <= float(res[f"{kind}.{m}"]) <= 1.0 or m in ("ari", "ami")
    # the numbers are the metrics module's on the stored embeddings, same split
    emb = np.load(tiny_embedded / "embeddings.npy")
    index = pd.read_csv(tiny_embedded / "index.csv")
    lab, split = index["landmark_id"].to_numpy(), index["split"].to_numpy()
    tr, te, db = split == "train", split == "test", np.isin(split, ["train", "val"])
    direct = evaluate_embeddings(emb[tr], lab[tr], emb[te], lab[te], emb[db], lab[db], seed=0, n_init=10, k=100)
    assert float(res["model.nmi"]) == pytest.approx(direct["nmi"], abs=1e-6)
    assert float(res["model.map@100"]) == pytest.approx(direct["map@100"], abs=1e-6)
    assert int(res["model.n_queries"]) == te.sum()


def near_duplicate(src: Path, dest: Path, **save: object) -> Path:
    """The same photo, slightly brighter and re-encoded."""
    img = Image.open(src).convert("RGB")
    arr = np.clip(np.asarray(img).astype(int) + 4, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(dest, **save)
    return dest


def test_query_tsv_ranks_the_near_duplicate_first(tiny_embedded, tiny_prepared, tmp_path):
    manifest = pd.read_csv(tiny_prepared / "train.csv", dtype={"id": str})
    target = manifest.iloc[7]
    query = near_duplicate(tiny_prepared / target["path"], tmp_path / "dup.jpg", quality=90)
    proc = run_cli("query", f"image={query}", "k=5", f"embed_run={tiny_embedded}", outputs=outputs_of(tiny_embedded))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout), delimiter="\t"))
    assert list(rows[0]) == ["rank", "distance", "id", "landmark_id", "path", "query"]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    distances = [float(r["distance"]) for r in rows]
    assert distances == sorted(distances)
    assert rows[0]["id"] == target["id"] and int(rows[0]["landmark_id"]) == target["landmark_id"]
    assert [line.split("\t")[2] for line in proc.stdout.splitlines()][1] == target["id"]  # `cut -f3`
    assert all(r["query"] == str(query) for r in rows)


def test_query_accepts_any_readable_image_and_lists_folders(tiny_embedded, tiny_prepared, tmp_path):
    manifest = pd.read_csv(tiny_prepared / "train.csv", dtype={"id": str})
    src = Image.open(tiny_prepared / manifest["path"][3]).convert("RGB").resize((300, 220))
    folder = tmp_path / "queries"
    folder.mkdir()
    src.convert("L").save(folder / "gray.png")
    src.convert("RGBA").save(folder / "rgba.png")
    src.convert("P").save(folder / "palette.png")
    rotated = src.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF says rotate back
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(folder / "exif.jpg", exif=exif.tobytes())
    (folder / "notes.txt").write_text("not an image, ignored by folder listing")
    proc = run_cli("query", f"image={folder}", "k=3", "format=json", "save_grid=true",
                   f"embed_run={tiny_embedded}", outputs=outputs_of(tiny_embedded))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [Path(r["query"]).name for r in out] == ["exif.jpg", "gray.png", "palette.png", "rgba.png"]
    assert all(len(r["neighbours"]) == 3 for r in out)
    by_name = {Path(r["query"]).name: r["neighbours"][0]["id"] for r in out}
    assert by_name["exif.jpg"] == by_name["rgba.png"] == manifest["id"][3]  # EXIF rotation undone
    grids = list((outputs_of(tiny_embedded) / "query").glob("*/retrieval_grid.png"))
    assert grids and grids[-1].read_bytes()[:4] == b"\x89PNG"

    proc = run_cli("query", f"image=[{folder / 'gray.png'},{folder / 'rgba.png'}]", "k=2", "format=table",
                   f"embed_run={tiny_embedded}", outputs=outputs_of(tiny_embedded))
    assert proc.returncode == 0 and "gray.png" in proc.stdout and "rgba.png" in proc.stdout


def test_query_k_larger_than_database_returns_all(tiny_embedded, tiny_prepared):
    n_db = sum(len(pd.read_csv(tiny_prepared / f"{s}.csv")) for s in ("train", "val"))
    image = next((tiny_prepared / "test").glob("*.jpg"))
    proc = run_cli("query", f"image={image}", "k=100000", f"embed_run={tiny_embedded}", outputs=outputs_of(tiny_embedded))
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1 + n_db
    assert "larger than the database" in proc.stderr
    one_line_error(run_cli("query", f"image={image}", "k=0", f"embed_run={tiny_embedded}", outputs=outputs_of(tiny_embedded)),
                   "k=0 is out of range")


def test_query_bad_images(tiny_embedded, tmp_path):
    good = Image.new("RGB", (64, 64), (120, 30, 30))
    good.save(tmp_path / "good.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "good.jpg").read_bytes()[:200])
    (tmp_path / "text.jpg").write_text("hello")
    cases = {"missing.jpg": "does not exist", "empty.jpg": "is empty", "truncated.jpg": "truncated or corrupt",
             "text.jpg": "is not an image"}
    for name, expected in cases.items():
        proc = run_cli("query", f"image={tmp_path / name}", f"embed_run={tiny_embedded}", outputs=outputs_of(tiny_embedded))
        one_line_error(proc, expected, name)
        assert proc.stdout == ""


def test_run_dirs_without_their_artifacts(tmp_path, tiny_trained):
    out = tmp_path / "outputs"
    hollow = tmp_path / "hollow"
    hollow.mkdir()
    one_line_error(run_cli("embed", f"train_run={hollow}", outputs=out), "has no best.pt")
    one_line_error(run_cli("embed", outputs=out), "no complete train run found", "landmark-ae train")
    one_line_error(run_cli("evaluate", outputs=out), "no complete embed run found")
    one_line_error(run_cli("query", "image=x.jpg", f"embed_run={hollow}", outputs=out), "not a complete embed run")


def test_checkpoint_that_does_not_fit_its_architecture(tmp_path, tiny_trained):
    ckpt = torch.load(tiny_trained / "best.pt", weights_only=True)
    m2 = dict(ckpt, model_config={**ckpt["model_config"], "name": "m2-ish",
                                  "encoder": [dict(l, out_channels=12) if l["type"] == "Conv2d" and l["out_channels"] == 8 else l
                                              for l in ckpt["model_config"]["encoder"]]})
    bad_run = tmp_path / "bad_run"
    bad_run.mkdir()
    torch.save(m2, bad_run / "best.pt")
    proc = run_cli("embed", f"train_run={bad_run}", outputs=tmp_path / "outputs")
    one_line_error(proc, "model m2-ish")


def test_malicious_checkpoint_is_refused_not_executed(tmp_path, tiny_trained):
    marker = tmp_path / "pwned"
    evil_run = tmp_path / "evil_run"
    evil_run.mkdir()
    # A pickle whose loading runs `touch <marker>` (built in a subprocess: the class exists only there).
    make = (
        "import os, sys, torch\n"
        "class Evil:\n"
        "    def __reduce__(self):\n"
        f"        return (os.system, ('touch {marker}',))\n"
        f"torch.save({{'format': '{CHECKPOINT_FORMAT}', 'payload': Evil()}}, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", make, str(evil_run / "best.pt")], check=True)
    proc = run_cli("embed", f"train_run={evil_run}", outputs=tmp_path / "outputs")
    one_line_error(proc, "refused by weights-only loading")
    assert not marker.exists()
    # proof that the pickle is live: unsafe loading does run it
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(evil_run / 'best.pt')!r}, weights_only=False)"],
                   capture_output=True)
    assert marker.exists()


def test_query_with_another_models_checkpoint_is_refused(tiny_embedded, tiny_prepared, tiny_trained, tmp_path):
    # the same architecture with other weights: dimensions match, but these embeddings are not its own
    ckpt = torch.load(tiny_trained / "best.pt", weights_only=True)
    first = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][first] = ckpt["state_dict"][first] + 0.01
    other = tmp_path / "other" / "best.pt"
    other.parent.mkdir()
    torch.save(ckpt, other)
    image = next((tiny_prepared / "test").glob("*.jpg"))
    proc = run_cli("query", f"image={image}", f"embed_run={tiny_embedded}", f"checkpoint={other}",
                   outputs=tmp_path / "outputs")
    one_line_error(proc, "were made by another checkpoint")
