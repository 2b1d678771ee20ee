"""`embed` (landmark_ae/retrieval/embed.py, collection.py, embed_run.py): the stored float32 embeddings
and index of every prepared image, of another prepared dataset (data_dir=) or of any folder or list
of images (images=), and what it refuses to embed."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import compose, model_config, results, run_cli, run_in_process

from landmark_ae.errors import UserError
from landmark_ae.model.builder import build_model
from landmark_ae.model.checkpoints import load_checkpoint, model_from_checkpoint
from landmark_ae.retrieval.embed import check_input_size
from landmark_ae.retrieval.embed_run import EmbedRun, train_run_embed_settings
from landmark_ae.runs import write_run_record


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


def test_train_runs_without_their_artifacts_are_refused(tmp_path):
    hollow = tmp_path / "hollow"
    hollow.mkdir()

    def err(*args: str) -> str:
        with pytest.raises(UserError) as info:
            run_in_process("embed", f"paths.output_dir={tmp_path / 'outputs'}", "progress=false", *args,
                           run_dir=tmp_path / "run")
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "has no best.pt" in err(f"train_run={hollow}")
    message = err()
    assert "no complete train run found" in message and "landmark-ae train" in message
    assert "does not exist" in err(f"train_run={tmp_path / 'nope'}")


# ---- embedding another collection: data_dir=<prepare run>, images=<folder or list of paths> ----------


def stored_images(prepared: Path, n: int) -> list[Path]:
    """The first n stored JPEGs of a prepared dataset's train split."""
    manifest = pd.read_csv(prepared / "train.csv", dtype={"id": str})
    return [prepared / p for p in manifest["path"][:n]]


def read_index(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "index.csv", dtype={"id": str, "landmark_id": str}, keep_default_na=False)


@pytest.fixture(scope="module")
def photo_folder(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A nested folder: 3 images at the top, 3 two levels down, one file that is not an image, and a
    note that is not listed at all (not an image suffix)."""
    root = tmp_path_factory.mktemp("collection") / "holiday"
    (root / "day2" / "beach").mkdir(parents=True)
    for i, src in enumerate(stored_images(tiny_prepared, 6)):
        shutil.copy(src, (root if i < 3 else root / "day2" / "beach") / src.name)
    (root / "day2" / "broken.jpg").write_bytes(b"this is not a JPEG")
    (root / "notes.txt").write_text("not a photo")
    return root


@pytest.fixture(scope="module")
def photo_run(photo_folder: Path, tiny_trained: Path) -> tuple[Path, dict[str, str]]:
    """`landmark-ae embed images=<photo_folder>` through the CLI: (run dir, its stdout results)."""
    proc = run_cli("embed", f"train_run={tiny_trained}", f"images={photo_folder}", "progress=false",
                   outputs=photo_folder.parent / "outputs")
    assert proc.returncode == 0, proc.stderr
    res = results(proc)
    return Path(res["run_dir"]), res


def test_embed_images_of_a_folder_then_query_finds_each_image_itself(photo_run, photo_folder, tiny_trained):
    run, res = photo_run
    assert res["images"] == "6" and res["failed"] == "1"
    index = read_index(run)
    files = sorted(photo_folder.rglob("*.jpg"))
    assert set(index["path"]) == {str(p) for p in files if p.name != "broken.jpg"}
    assert list(index["id"]) == [Path(p).stem for p in index["path"]]  # unique, safe stems: the ids
    assert set(index["landmark_id"]) == {""} and set(index["split"]) == {"database"}
    failures = pd.read_csv(run / "failures.csv", keep_default_na=False)
    assert list(failures.columns) == ["id", "path", "reason", "detail"]
    assert failures.to_dict("records")[0] | {"detail": ""} == {
        "id": "broken", "path": str(photo_folder / "day2" / "broken.jpg"), "reason": "not_an_image", "detail": ""}
    meta = json.loads((run / "embed.json").read_text())
    assert meta["data"] == "images:holiday" and meta["data_dir"] is None and meta["images"] == str(photo_folder)
    assert meta["counts"] == {"database": 6} and meta["trained_on"] == "gldv2" and meta["image_size"] == 96
    embed_run = EmbedRun(run)
    assert (embed_run.labels == -1).all() and list(embed_run.database()) == list(range(6)) and not embed_run.labelled

    target = files[-1] if files[-1].name != "broken.jpg" else files[0]
    proc = run_cli("query", f"image={target}", f"embed_run={run}", "k=1", outputs=photo_folder.parent / "outputs")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout), delimiter="\t"))
    assert len(rows) == 1 and rows[0]["id"] == target.stem and rows[0]["landmark_id"] == ""
    assert rows[0]["path"] == str(target) and float(rows[0]["distance"]) < 1e-3


def test_evaluate_refuses_an_unlabelled_collection(photo_run, tmp_path):
    with pytest.raises(UserError) as info:
        run_in_process("evaluate", f"embed_run={photo_run[0]}", run_dir=tmp_path / "evaluate")
    message = str(info.value)
    assert "holds no landmark labels: evaluate needs a labelled dataset, e.g. embed data_dir=<prepare run>" in message
    assert "\n" not in message and not (tmp_path / "evaluate" / "metrics.json").exists()


def test_embed_a_list_of_paths_with_duplicate_stems_gets_hashed_ids(tiny_prepared, tiny_trained, tmp_path):
    a, b, c = stored_images(tiny_prepared, 3)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    shutil.copy(a, tmp_path / "x" / "same.jpg")
    shutil.copy(b, tmp_path / "y" / "same.jpg")
    listing = tmp_path / "photos.txt"
    listing.write_text(f"x/same.jpg\n\ny/same.jpg\n{c}\nx/same.jpg\nnowhere/gone.jpg\n")  # relative, absolute, repeated
    run = tmp_path / "embed"
    out = run_in_process("embed", f"train_run={tiny_trained}", f"images={listing}", "progress=false", run_dir=run)
    assert out["images"] == 3 and out["failed"] == 1

    def sha(rel: str) -> str:
        return hashlib.sha1(rel.encode()).hexdigest()[:16]

    index = read_index(run)
    assert list(index["path"]) == [str(tmp_path / "x" / "same.jpg"), str(tmp_path / "y" / "same.jpg"), str(c)]
    rel_c = os.path.relpath(c, tmp_path)
    assert list(index["id"]) == [sha("x/same.jpg"), sha("y/same.jpg"), sha(Path(rel_c).as_posix())]
    failures = pd.read_csv(run / "failures.csv", keep_default_na=False)
    assert failures[["id", "reason"]].values.tolist() == [[sha("nowhere/gone.jpg"), "missing"]]
    meta = json.loads((run / "embed.json").read_text())
    assert meta["data"] == "images:photos.txt" and meta["images"] == str(listing)

    # resumed, a run embeds the collection it started on, whatever the command line says
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    write_run_record(resumed, "embed", "interrupted", train_run=str(tiny_trained), images=str(listing), data_dir=None)
    run_in_process("embed", f"resume={resumed}", "progress=false", run_dir=resumed)
    assert list(read_index(resumed)["id"]) == list(index["id"])
    assert np.array_equal(np.load(resumed / "embeddings.npy"), np.load(run / "embeddings.npy"))

    # nothing readable at all: one line, and failures.csv says why (x is a folder: not a file, not "missing")
    (tmp_path / "bad.txt").write_text("gone.jpg\nx\n")
    with pytest.raises(UserError, match=r"none of its 2 files could be read \(missing: 1, not_a_file: 1; "
                                        r"listed in .*failures.csv\)$"):
        run_in_process("embed", f"train_run={tiny_trained}", f"images={tmp_path / 'bad.txt'}", "progress=false",
                       run_dir=tmp_path / "bad")


def test_embed_another_prepared_dataset_with_data_dir(tiny_source, tiny_trained, tmp_path):
    other = tmp_path / "other"  # landmarks 1003-1005 of the source, prepared as another dataset
    run_in_process("prepare", "data=landmarks10", f"data.root={tiny_source}", "data.landmark_min=1003",
                   "data.landmark_max=1006", "progress=false", run_dir=other)
    run = tmp_path / "embed"
    run_in_process("embed", f"train_run={tiny_trained}", f"data_dir={other}", "progress=false", run_dir=run)
    meta = json.loads((run / "embed.json").read_text())
    assert meta["data"] == "landmarks10" and meta["data_dir"] == str(other.resolve()) and meta["images"] is None
    assert meta["trained_on"] == "gldv2" and meta["train_run"] == str(tiny_trained.resolve())
    index = read_index(run)
    prepared = pd.concat([pd.read_csv(other / f"{s}.csv", dtype={"id": str, "landmark_id": str}).assign(split=s)
                          for s in ("train", "val", "test")], ignore_index=True)
    assert index[["id", "landmark_id", "split"]].values.tolist() == prepared[["id", "landmark_id", "split"]].values.tolist()
    assert set(index["landmark_id"]) == {"1003", "1004", "1005"}

    out = run_in_process("evaluate", f"embed_run={run}", "n_init=1", run_dir=tmp_path / "evaluate")
    metrics = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert metrics["data"] == "landmarks10" and metrics["trained_on"] == "gldv2"
    assert out["model.n_clusters"] == 3 and out["pixels.name"] == "pixels_11x11"


def test_an_input_size_the_encoder_cannot_take_is_a_one_line_error():
    # M4 ends its encoder in a linear layer: it takes 92x92 only. M5 pools, so any size goes.
    m4, m5 = model_config("m4"), model_config("m5")
    with pytest.raises(UserError, match=r"^input_size=64: m4 was trained at 92x92 and its encoder takes no other "
                                        r"size; pass input_size=null \(or 92\)$"):
        check_input_size(build_model(m4), m4, 64)
    assert check_input_size(build_model(m4), m4, None) == check_input_size(build_model(m4), m4, 92) == 92
    assert check_input_size(build_model(m5), m5, 80) == 80


def test_data_dir_and_images_together_are_refused(tiny_prepared, tmp_path):
    with pytest.raises(UserError, match="data_dir= and images= both name what to embed: pass one of them") as info:
        run_in_process("embed", f"data_dir={tiny_prepared}", f"images={tmp_path}", run_dir=tmp_path / "run")
    assert "\n" not in str(info.value)


def test_an_empty_data_dir_or_images_is_refused_not_the_train_runs_dataset(tmp_path):
    # a shell's data_dir=$DIR with DIR unset must not embed the training data in its place
    for key, placeholder in (("data_dir", "prepare run dir"), ("images", "folder or text file of paths")):
        with pytest.raises(UserError, match=rf"^{key} is empty: pass {key}=<{placeholder}>, or leave {key} out"):
            run_in_process("embed", f"{key}=", run_dir=tmp_path / key)


def test_embed_takes_the_train_runs_eval_embed_and_the_command_line_wins(tiny_trained, tmp_path):
    train = tmp_path / "train_run"
    shutil.copytree(tiny_trained, train)
    config = yaml.safe_load((train / ".hydra" / "config.yaml").read_text())
    config["eval_embed"].update(pooling="avg", l2=True, pca_whiten=4, whiten_shrinkage=0.05, dba_k=2, qe_k=1)
    (train / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    assert train_run_embed_settings(train)["dba_k"] == 2
    proc = run_cli("embed", f"train_run={train}", "pca_whiten=3", "progress=false", outputs=tmp_path / "outputs")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((Path(results(proc)["run_dir"]) / "embed.json").read_text())
    assert (meta["pooling"], meta["l2"], meta["pca_whiten"], meta["dba_k"], meta["qe_k"]) == ("avg", True, 3, 2, 1)
    assert meta["whiten_shrinkage"] == 0.05
    assert meta["settings_from_train_run"] == {"pooling": "avg", "l2": True, "whiten_shrinkage": 0.05, "dba_k": 2,
                                               "qe_k": 1}
    assert "settings from train run" in proc.stderr and "pca_whiten" not in proc.stderr.split("settings from")[1].split("\n")[0]
    # run.json's "embed" record, where a train run has one, is read first
    record = json.loads((train / "run.json").read_text())
    (train / "run.json").write_text(json.dumps({**record, "embed": {"l2": True, "qe_k": 5, "other": 1}}))
    assert train_run_embed_settings(train) == {"l2": True, "qe_k": 5}
    shutil.rmtree(train / ".hydra")
    (train / "run.json").write_text(json.dumps(record))
    assert train_run_embed_settings(train) == {}


# ---- settings resolved once, by the command layer; the checkpoint hashed once ----------------------------


def test_effective_settings_take_the_train_runs_where_the_command_line_is_silent():
    from landmark_ae.commands.embed import check_reranking, effective_settings
    from landmark_ae.config import EmbedSettings, Pooling

    cfg = compose("embed", "pca_whiten=3", "qe_k=0")
    carried = {"pooling": "avg", "pca_whiten": 4, "whiten_shrinkage": 0, "qe_k": 2, "dba_k": 0}
    settings, changed = effective_settings(cfg, carried, {"pca_whiten", "qe_k"})
    assert isinstance(settings, EmbedSettings) and settings.pooling is Pooling.avg  # typed, not the carried str
    assert (settings.pca_whiten, settings.qe_k, settings.dba_k, settings.whiten_shrinkage) == (3, 0, 0, 0.0)
    assert isinstance(settings.whiten_shrinkage, float)
    assert changed == {"pooling": "avg", "whiten_shrinkage": 0}  # dba_k=0 is the default already: no change
    # a config composed in code (no command line known): every key counts as given
    assert effective_settings(cfg, carried, None) == (EmbedSettings(pca_whiten=3), {})

    settings, changed = effective_settings(compose("embed"), {"dba_k": 2}, set())
    with pytest.raises(UserError, match=r"^dba_k=2 qe_k=0 need l2=true: they weigh neighbours by cosine similarity, "
                                        r"of unit-length rows \(dba_k from train run /t's eval_embed: pass dba_k=0 to "
                                        r"turn them off\)$"):
        check_reranking(settings, changed, Path("/t"))
    check_reranking(effective_settings(compose("embed"), {"dba_k": 2, "l2": True}, set())[0], {}, Path("/t"))


def test_an_embed_run_hashes_the_checkpoint_once(tiny_trained, tmp_path, monkeypatch):
    import landmark_ae.model.checkpoints as checkpoints
    import landmark_ae.runs as runs

    hashed: list[str] = []
    sha256_file = runs.sha256_file

    def counted(path):
        hashed.append(Path(path).name)
        return sha256_file(path)

    monkeypatch.setattr(runs, "sha256_file", counted)
    monkeypatch.setattr(checkpoints, "sha256_file", counted)
    run_in_process("embed", f"train_run={tiny_trained}", "progress=false", run_dir=tmp_path / "embed")
    assert hashed.count("best.pt") == 1  # the train run's manifest check and embed.json's checkpoint_sha256
    meta = json.loads((tmp_path / "embed" / "embed.json").read_text())
    assert meta["checkpoint_sha256"] == hashlib.sha256((tiny_trained / "best.pt").read_bytes()).hexdigest()


def test_a_whitening_the_train_run_carries_is_cut_to_what_a_small_collection_fits(caplog):
    import numpy as np

    from landmark_ae.config import EmbedSettings
    from landmark_ae.retrieval.embed import Embedded, fit_inherited_whitening

    database = np.array([True] * 57 + [False] * 3)  # 57 database rows fit at most 56 axes
    part = Embedded(np.zeros((60, 192), dtype=np.float32), [], database, {})
    recipe = EmbedSettings(l2=True, pca_whiten=192)
    with caplog.at_level("WARNING"):
        cut = fit_inherited_whitening(part, recipe, {"pca_whiten": 192})
    assert cut.pca_whiten == 56 and cut.l2 and "whitening 56 axes" in caplog.text
    # given on the command line (not the train run's): kept, and post_process refuses it in one line
    assert fit_inherited_whitening(part, recipe, {}).pca_whiten == 192
    assert fit_inherited_whitening(part, EmbedSettings(pca_whiten=32), {"pca_whiten": 32}).pca_whiten == 32
