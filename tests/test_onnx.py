"""encoder.onnx (issue 24): written and checked by embed, the same answers on ONNX Runtime as on torch,
query and serve without torch, and the preprocessing reproduced without torch bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, compose, run_in_process

from landmark_ae.errors import UserError

# The retrieval recipe's kind of settings (conf/experiment/retrieval.yaml), sized for the tiny dataset.
RECIPE = ("input_size=112", "l2=true", "pca_whiten=16", "whiten_shrinkage=0.01", "dba_k=3", "qe_k=3")


@pytest.fixture(scope="module")
def onnx_embedded(tiny_contrastive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_contrastive (M5) embedded at 112 px with the recipe's post-processing, encoder.onnx
    written; the database rows encoded by torch (runtime=torch), so the runtimes are compared."""
    run_dir = tmp_path_factory.mktemp("onnx") / "embed"
    run_in_process("embed", f"train_run={tiny_contrastive}", *RECIPE, "onnx=true", "runtime=torch", "progress=false",
                   run_dir=run_dir)
    return run_dir


def test_preprocessing_without_torch_is_bit_identical_to_torchs():
    import torch

    from landmark_ae.data.prepared import resize_uint8, to_model_range
    from landmark_ae.retrieval.preprocess import model_range, resize_images

    images = np.random.default_rng(0).integers(0, 256, (8, 96, 96, 3), dtype=np.uint8)
    for size in (112, 48, 96, 150):
        expected = resize_uint8(images, size).numpy()
        assert np.array_equal(resize_images(images, size), expected), size
        assert np.array_equal(model_range(expected), to_model_range(torch.from_numpy(expected)).numpy())


def test_embed_writes_a_checked_encoder_onnx_listed_in_the_manifest(onnx_embedded):
    meta = json.loads((onnx_embedded / "embed.json").read_text())
    record = meta["onnx"]
    assert record["file"] == "encoder.onnx" and record["encoded_with"] == "torch"
    assert record["checked_images"] > 10 and record["max_abs_diff"] <= record["tolerance"] <= 1e-4 * 10
    assert record["top_k_agreement"] == 1.0 and record["dynamic"] == ["batch"]  # resized in the graph: fixed 96
    assert "encoder.onnx" in json.loads((onnx_embedded / "manifest.json").read_text())["artifacts"]


def test_query_gives_the_same_neighbours_on_onnx_and_torch(onnx_embedded, tiny_prepared):
    from landmark_ae.retrieval.embed_run import EmbedRun
    from landmark_ae.retrieval.retriever import Retriever

    run = EmbedRun(onnx_embedded)
    on_torch, on_onnx = Retriever(run, runtime="torch"), Retriever(run, runtime="auto")
    assert (on_torch.runtime, on_onnx.runtime) == ("torch", "onnx")
    test = pd.read_csv(tiny_prepared / "test.csv", dtype={"id": str})
    images = np.stack([on_onnx.load_image(tiny_prepared / p) for p in test["path"]])
    assert np.abs(on_torch.encode(images) - on_onnx.encode(images)).max() < 1e-5
    for a, b in zip(on_torch.neighbours(images, 10), on_onnx.neighbours(images, 10), strict=True):
        assert [h["id"] for h in a] == [h["id"] for h in b]
        assert max(abs(x["distance"] - y["distance"]) for x, y in zip(a, b, strict=True)) < 1e-4


def test_query_and_serve_on_onnx_import_no_torch(onnx_embedded, tiny_prepared, tmp_path):
    image = tiny_prepared / pd.read_csv(tiny_prepared / "test.csv", dtype={"id": str})["path"][0]
    code = f"""
import sys
from landmark_ae.cli import main
main(["query", "image={image}", "embed_run={onnx_embedded}", "k=3"])
from landmark_ae.retrieval.retriever import Retriever
from landmark_ae.serve.app import make_app
from landmark_ae.serve.loading import load_served_run
from landmark_ae.serve import server
retriever = Retriever(load_served_run("{onnx_embedded}", "unused"))
assert retriever.runtime == "onnx" and len(retriever.neighbours(retriever.load_image("{image}")[None], 3)[0]) == 3
import asyncio
from aiohttp.test_utils import TestClient, TestServer
async def ask():
    settings = server.settings_of(type("C", (), dict(k=3, max_k=10, max_batch=4, max_wait_ms=1, max_queue=8, max_body_mb=1,
                                                    max_inflight_mb=2, max_pixels=10**7, timeout_s=10))())
    async with TestClient(TestServer(make_app(retriever, settings))) as client:
        info = await (await client.get("/info")).json()
        hits = await (await client.post("/query", data=open("{image}", "rb").read())).json()
    return info["runtime"], len(hits["neighbours"])
assert asyncio.run(ask()) == ("onnx", 3)
print("loaded", *sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "torchvision", "pandas", "sklearn"}}),
      file=sys.stderr)
"""
    env = {"LANDMARK_AE_OUTPUTS": str(tmp_path / "outputs"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "loaded", proc.stderr
    assert len(proc.stdout.splitlines()) == 4  # the header and three neighbours
    assert "Warning" not in proc.stderr, proc.stderr
    record = json.loads(next((tmp_path / "outputs" / "query").glob("*/run.json")).read_text())
    assert record["runtime"] == "onnx"


def test_runtime_onnx_needs_an_encoder_onnx_and_the_cpu(tiny_embedded, onnx_embedded):
    from landmark_ae.retrieval.embed_run import EmbedRun
    from landmark_ae.retrieval.retriever import choose_runtime

    with pytest.raises(UserError, match="holds no encoder.onnx"):
        choose_runtime(EmbedRun(tiny_embedded), "onnx")
    assert choose_runtime(EmbedRun(tiny_embedded), "auto") == "torch"
    with pytest.raises(UserError, match="runs on the CPU"):
        choose_runtime(EmbedRun(onnx_embedded), "onnx", "cuda")
    assert choose_runtime(EmbedRun(onnx_embedded), "auto", "auto") == "torch"


def test_an_export_over_tolerance_is_not_kept(monkeypatch, tmp_path, caplog):
    import torch

    from landmark_ae.config import model_yaml
    from landmark_ae.model.builder import build_model
    from landmark_ae.retrieval import onnx_export
    from landmark_ae.retrieval.embed import Encoder

    encoder = Encoder(build_model(model_yaml("m1")).eval(), 96, 8, torch.device("cpu"), "flatten", 3.0)
    images = np.random.default_rng(1).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    monkeypatch.setattr(onnx_export, "write_graph", lambda graph, sample, path, pooled: path.write_bytes(b"x"))
    monkeypatch.setattr(onnx_export, "OnnxEncoder", lambda path, batch_size: lambda x: encoder(x) + 1e-2)
    assert onnx_export.export_checked(tmp_path, encoder, 96, images) is None
    assert list(tmp_path.iterdir()) == []
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "not kept" in caplog.records[0].message


# The README's snippet: a photo embedded as `landmark-ae embed` does, with onnxruntime, numpy and Pillow alone.
SNIPPET = '''
import json, numpy as np, onnxruntime as ort
from PIL import Image, ImageOps
size = json.load(open(f"{bundle}/preprocess.json"))["image_size"]
img = Image.open(photo)
img.draft("RGB", (size, size))  # a JPEG decoded at a reduced scale, as embed decodes it
img = ImageOps.exif_transpose(img).convert("RGB").resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
row = ort.InferenceSession(f"{bundle}/encoder.onnx").run(None, {"images": np.asarray(img)[None]})[0]
t = np.load(f"{bundle}/transform.npz")
unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
if "projection" in t:
    row = ((unit(row) if t["l2"] else row) - t["mean"]) @ t["projection"]
if t["l2"]:
    row = unit(row)
'''
BLOCKER = '''
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("landmark_ae", "torch"):
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Blocked())
'''


def run_snippet(bundle: Path, photos: list[Path], cwd: Path) -> np.ndarray:
    """SNIPPET's rows for `photos`, run in a fresh interpreter where landmark_ae and torch cannot be imported."""
    code = BLOCKER + f"bundle = {str(bundle)!r}\nfor photo in {[str(p) for p in photos]!r}:\n" + \
        "".join(f"    {line}\n" for line in SNIPPET.strip().splitlines()) + "    print(*row[0].tolist())\n" + \
        "assert 'torch' not in sys.modules and 'landmark_ae' not in sys.modules\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return np.array([line.split() for line in proc.stdout.splitlines()], dtype=np.float64)


def test_export_bundle_embeds_a_photo_without_torch_or_landmark_ae(onnx_embedded, tiny_prepared, tmp_path):
    import pyarrow.parquet as pq

    from landmark_ae.commands.export import run as export
    from landmark_ae.config import ExportConfig, validate

    bundle = tmp_path / "bundle"
    cfg = compose("export", f"embed_run={onnx_embedded}", f"out={bundle}")
    validate(cfg, ExportConfig)
    assert export(cfg, tmp_path / "run")["bundle"] == bundle
    assert {p.name for p in bundle.iterdir()} == {"encoder.onnx", "preprocess.json", "transform.npz", "postprocess.json",
                                                 "embeddings.parquet", "database.npy", "bundle.json"}
    table = pq.read_table(bundle / "embeddings.parquet").to_pandas()
    assert list(table.columns) == ["id", "path", "split", "label", "class_name", "vector"]
    stored = np.load(onnx_embedded / "embeddings.npy")
    assert np.array_equal(np.stack(table["vector"]), stored)
    assert len(SNIPPET.strip().splitlines()) <= 15
    row_of = {i: n for n, i in enumerate(table["id"])}
    test = pd.read_csv(tiny_prepared / "test.csv", dtype={"id": str}).iloc[:3]
    got = run_snippet(bundle, [tiny_prepared / p for p in test["path"]], tmp_path)
    assert np.abs(got - stored[[row_of[i] for i in test["id"]]]).max() < 1e-4
    blocked = subprocess.run([sys.executable, "-c", BLOCKER + "import landmark_ae"], capture_output=True, text=True)
    assert "landmark_ae is blocked" in blocked.stderr  # the blocker does block


def test_export_refuses_a_run_without_encoder_onnx_and_a_used_folder(tiny_embedded, onnx_embedded, tmp_path):

    from landmark_ae.commands.export import run as export

    with pytest.raises(UserError, match="holds no encoder.onnx"):
        export(compose("export", f"embed_run={tiny_embedded}"), tmp_path / "run")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(UserError, match="not an empty folder"):
        export(compose("export", f"embed_run={onnx_embedded}", f"out={tmp_path / 'used'}"), tmp_path / "run")


def test_embed_on_onnx_matches_torch_and_the_snippet_on_photos(tiny_contrastive, tmp_path):
    # Photos of another size than the stored one (JPEG draft, bicubic to 96, then 112 in the graph):
    # embed encodes them on the faster runtime (auto, on the CPU), the other agrees, and so does the snippet.
    from conftest import jpeg

    from landmark_ae.commands.export import run as export
    from landmark_ae.retrieval.embed_run import EmbedRun
    from landmark_ae.retrieval.retriever import Retriever

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, size in enumerate([(200, 150), (640, 480), (97, 301)]):
        (photos / f"p{i}.jpg").write_bytes(jpeg(i, size))
    # GeM in place of M5's own average pooling: in the graph too (the recipe's pooling=gem).
    embed = run_in_process("embed", f"train_run={tiny_contrastive}", f"images={photos}", "input_size=112", "l2=true",
                           "pooling=gem", "gem_p=2", "onnx=true", "progress=false", run_dir=tmp_path / "embed")
    run = EmbedRun(embed["run_dir"])
    assert run.meta["pooling"] == "gem" and run.meta["onnx"]["max_abs_diff"] < 1e-4
    # runtime=auto encodes with whichever runtime ran the check's images faster, and records both.
    timed = run.meta["onnx"]["images_per_s"]
    assert run.meta["onnx"]["encoded_with"] == ("torch" if timed["torch"] > timed["onnx"] else "onnx")
    paths = sorted(photos.iterdir())
    for runtime in ("torch", "onnx"):
        side = Retriever(run, runtime=runtime)
        rows = side.embed(np.stack([side.load_image(p) for p in paths]))
        assert np.abs(rows - np.asarray(run.embeddings)).max() < 1e-5, runtime
    export(compose("export", f"embed_run={run.run_dir}", f"out={tmp_path / 'bundle'}"), tmp_path / "run")
    assert np.abs(run_snippet(tmp_path / "bundle", paths, tmp_path) - np.asarray(run.embeddings)).max() < 1e-4


@pytest.mark.slow  # one more export (~3 s)
def test_a_pooling_encoder_without_resize_takes_any_size(tmp_path):
    # M5 fed at its stored size: nothing is resized in the graph, so height and width stay dynamic.
    import torch

    from landmark_ae.config import model_yaml
    from landmark_ae.model.builder import build_model
    from landmark_ae.retrieval.embed import Encoder
    from landmark_ae.retrieval.onnx_encoder import OnnxEncoder
    from landmark_ae.retrieval.onnx_export import export_checked

    model = build_model(model_yaml("m5")).eval()
    encoder = Encoder(model, 96, 8, torch.device("cpu"), "flatten", 3.0)
    images = np.random.default_rng(2).integers(0, 256, (6, 96, 96, 3), dtype=np.uint8)
    record = export_checked(tmp_path, encoder, 96, images)
    assert record is not None and record["dynamic"] == ["batch", "height", "width"]
    small = images[:3, :64, :80]
    got = OnnxEncoder(tmp_path / "encoder.onnx")(small)
    with torch.inference_mode():
        expected = model.embed(torch.from_numpy(small).permute(0, 3, 1, 2).float() / 127.5 - 1).numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_race_times_both_runtimes_on_the_same_images_and_reports_images_per_second():
    import time

    from landmark_ae.retrieval.onnx_export import race

    calls = []

    def slow(images):
        calls.append("torch")
        time.sleep(0.05)

    def fast(images):
        calls.append("onnx")
        time.sleep(0.005)

    timed = race(fast, slow, np.zeros((10, 4, 4, 3), np.uint8), rounds=2)
    assert calls == ["onnx", "torch"] * 3  # one untimed run each, then in turns
    assert 50 < timed["torch"] <= 200 and timed["onnx"] > 2 * timed["torch"]
