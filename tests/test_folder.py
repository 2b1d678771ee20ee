"""prepare data=folder (landmark_ae/data/sources/folder.py): a real folder tree of your own photos,
labelled by subfolders, by a CSV, or not at all; what is skipped and why; stable ids and splits."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose, jpeg, run_in_process
from PIL import Image

from landmark_ae.data.sources.folder import decode_rel, encode_rel, sample_folder

RED, BLUE = (230, 20, 20), (20, 20, 230)


def image_bytes(img: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def exif_rotated_jpeg() -> bytes:
    """Stored 80x40, left half red, right half blue, with EXIF orientation 6 (shown rotated 90 degrees
    clockwise: red on top, blue below)."""
    img = Image.new("RGB", (80, 40), BLUE)
    img.paste(Image.new("RGB", (40, 40), RED), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    return image_bytes(img, "JPEG", quality=95, exif=exif.tobytes())


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def photo_tree(root: Path) -> dict[str, bytes]:
    """Three classes with nested folders and every kind of file prepare meets; returns the kept
    images' bytes by relative path (the duplicate and the non-UTF-8 name included where made)."""
    kept = {
        "alpha/a1.jpg": jpeg(1),
        "alpha/trip/2024/a2.JPG": jpeg(2),
        "alpha/rotated.jpeg": exif_rotated_jpeg(),
        "beta/b1.png": image_bytes(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20), "PNG"),
        "beta/b2.webp": image_bytes(Image.new("RGB", (50, 40), (10, 200, 30)), "WEBP"),
        "beta/cmyk.jpg": image_bytes(Image.new("CMYK", (40, 30), (0, 200, 200, 0)), "JPEG"),
        "gamma/g1.gif": image_bytes(Image.new("P", (30, 30), 3), "GIF"),
        "gamma/g2.TIFF": image_bytes(Image.new("RGBA", (30, 20), (5, 5, 250, 128)), "TIFF"),
        "gamma/deep/er/g3.bmp": image_bytes(Image.new("RGB", (30, 20), (90, 90, 9)), "BMP"),
    }
    for rel, data in kept.items():
        write(root / rel, data)
    write(root / "gamma" / "copy_of_a1.jpg", kept["alpha/a1.jpg"])  # byte-identical: a duplicate
    write(root / "gamma" / "broken.jpg", b"this is not a jpeg")
    write(root / "alpha" / ".hidden.jpg", jpeg(5))
    write(root / ".thumbnails" / "t.jpg", jpeg(6))
    write(root / "beta" / "notes.txt", b"not an image")
    write(root / "loose.jpg", jpeg(7))  # no class folder
    os.mkfifo(root / "beta" / "pipe.jpg")
    outside = write(root.parent / "outside" / "o.jpg", jpeg(8))
    (root / "alpha" / "link_out.jpg").symlink_to(outside)
    (root / "alpha" / "link_in.jpg").symlink_to(root / "beta" / "b2.webp")  # inside root: followed
    (root / "gamma" / "loop").symlink_to(root)  # a folder reached again: walked once
    try:
        write(root / "alpha" / os.fsdecode(b"caf\xe9.jpg"), jpeg(9))
        kept[os.fsdecode(b"alpha/caf\xe9.jpg")] = jpeg(9)
    except (OSError, UnicodeEncodeError):  # a filesystem that refuses non-UTF-8 names
        pass
    return kept


def sha16(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def prepared_rows(run_dir: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(run_dir / f"{s}.csv", dtype={"id": str}).assign(split=s, row=lambda t: range(len(t)))
                      for s in ("train", "val", "test")], ignore_index=True)


def test_a_folder_tree_labelled_by_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    kept = photo_tree(root)
    run_dir = tmp_path / "prep"
    run_in_process("prepare", "data=folder", f"data.root={root}", "progress=false", run_dir=run_dir)

    classes = pd.read_csv(run_dir / "classes.csv")
    assert classes.to_dict("records") == [
        {"id": 0, "name": "alpha", "count": sum(k.startswith("alpha/") for k in kept) + 1},  # + link_in
        {"id": 1, "name": "beta", "count": 2},  # b2.webp is the same bytes as alpha/link_in.jpg, kept there
        {"id": 2, "name": "gamma", "count": 4}]  # the broken file counts (as found), it fails later
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str, keep_default_na=False)
    listed = [*kept, "alpha/link_in.jpg", "gamma/broken.jpg"]
    assert sorted(map(decode_rel, splits["file"])) == sorted(k for k in listed if k != "beta/b2.webp")
    # ids: the sha256 of the bytes; the symlink inside root and beta/b2.webp are the same bytes: kept once
    assert set(splits["id"]) == {sha16(b) for b in [*kept.values(), b"this is not a jpeg"]}
    dups = pd.read_csv(run_dir / "duplicates.csv", dtype=str)
    assert sorted(zip(dups["path"], dups["kept"], strict=True)) == [("beta/b2.webp", "alpha/link_in.jpg"),
                                                                    ("gamma/copy_of_a1.jpg", "alpha/a1.jpg")]
    failures = pd.read_csv(run_dir / "failures.csv", dtype=str, keep_default_na=False)
    by_path = {d.split(":")[0]: r for d, r in zip(failures["detail"], failures["reason"], strict=True) if d}
    assert by_path["alpha/.hidden.jpg"] == by_path[".thumbnails"] == "hidden"
    assert by_path["beta/pipe.jpg"] == "not_a_file"
    assert by_path["alpha/link_out.jpg"] == "symlink_outside_root"
    assert by_path["beta/notes.txt"] == "not_an_image_suffix"
    assert by_path["loose.jpg"] == "no_class_folder"
    assert by_path["gamma/loop"] == "folder_listed_twice"
    assert failures.loc[failures["id"] == sha16(b"this is not a jpeg"), "reason"].tolist() == ["not_an_image"]

    rows = prepared_rows(run_dir)
    assert len(rows) == len(kept) and set(rows["landmark_id"]) == {0, 1, 2}
    assert (rows.groupby("landmark_id")["split"].apply(lambda s: (s == "test").sum()) >= 1).all()
    rotated = rows[rows["id"] == sha16(kept["alpha/rotated.jpeg"])].iloc[0]
    pixels = np.load(run_dir / f"{rotated.split}.npy")[rotated.row].astype(int)
    top, bottom = pixels[:30].mean(axis=(0, 1)), pixels[-30:].mean(axis=(0, 1))
    assert top[0] > 180 > top[2] and bottom[2] > 180 > bottom[0]  # EXIF applied: red above blue, not beside it
    cmyk = rows[rows["id"] == sha16(kept["beta/cmyk.jpg"])].iloc[0]
    assert np.load(run_dir / f"{cmyk.split}.npy")[cmyk.row].shape == (96, 96, 3)

    # a rerun on the run dir (resume) reads splits.csv back and fetches a lost image by its recorded path
    odd = next((k for k in kept if k.startswith("alpha/caf")), "alpha/a1.jpg")  # the non-UTF-8 name where made
    row = rows[rows["id"] == sha16(kept[odd])].iloc[0]
    stored = run_dir / row.path
    stored.unlink()
    run_in_process("prepare", "data=folder", f"data.root={root}", "progress=false", run_dir=run_dir)
    assert stored.is_file() and prepared_rows(run_dir)[["id", "split"]].equals(rows[["id", "split"]])


def test_labels_from_a_csv(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for i in range(6):
        write(root / "any" / f"p{i}.jpg", jpeg(20 + i))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nany/p0.jpg,tower\nany/p1.jpg,tower\nany/p2.jpg,bridge\nany/p3.jpg,bridge\n"
                      "any/gone.jpg,bridge\n../outside.jpg,bridge\n")
    run_dir = tmp_path / "prep"
    run_in_process("prepare", "data=folder", f"data.root={root}", "data.labels=csv", f"data.csv={labels}",
                   "progress=false", run_dir=run_dir)
    rows = prepared_rows(run_dir)
    assert dict(zip(rows["id"], rows["landmark_id"], strict=True)) == {
        sha16(jpeg(20)): 1, sha16(jpeg(21)): 1, sha16(jpeg(22)): 0, sha16(jpeg(23)): 0}  # bridge 0, tower 1
    assert pd.read_csv(run_dir / "classes.csv")["name"].tolist() == ["bridge", "tower"]
    failures = pd.read_csv(run_dir / "failures.csv", dtype=str, keep_default_na=False)
    assert {d.split(":")[0]: r for d, r in zip(failures["detail"], failures["reason"], strict=True)} == {
        "any/gone.jpg": "missing", "../outside.jpg": "outside_root"}


def test_unlabelled_photos(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for i in range(12):
        write(root / ("" if i % 2 else "sub") / f"p{i}.png", image_bytes(Image.new("RGB", (20, 20), (i * 20, 0, 0)), "PNG"))
    run_dir = tmp_path / "prep"
    run_in_process("prepare", "data=folder", f"data.root={root}", "data.labels=none", "data.test_fraction=0.2",
                   "progress=false", run_dir=run_dir)
    rows = prepared_rows(run_dir)
    assert len(rows) == 12 and (rows["landmark_id"] == -1).all()
    assert pd.read_csv(run_dir / "classes.csv").empty


def folder_data(root: Path, *overrides: str):
    return compose("prepare", "data=folder", f"data.root={root}", *overrides).data


def test_the_same_folder_gives_the_same_ids_and_splits_and_additions_move_no_earlier_photo(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for c in range(3):
        for i in range(30):
            write(root / f"c{c}" / f"{i}.jpg", f"{c}-{i}".encode() * 3)  # bytes are enough: nothing is decoded here
    first = sample_folder(folder_data(root), workers=2).rows
    again = sample_folder(folder_data(root), workers=1).rows
    pd.testing.assert_frame_equal(first, again)
    assert set(first["split"]) == {"train", "val", "test"}
    assert (first.groupby("landmark_id")["split"].apply(lambda s: (s == "test").sum()) >= 1).all()

    for c in range(3):
        for i in range(30, 90):
            write(root / f"c{c}" / "new" / f"{i}.jpg", f"{c}-{i}".encode() * 3)
    grown = sample_folder(folder_data(root), workers=2).rows.set_index("id")
    moved = first[first["split"].to_numpy() != grown.loc[first["id"], "split"].to_numpy()]
    # The one documented exception: a class's forced test image (none of its photos hashed into the 1 %)
    # hands that role to a newcomer; every other earlier photo keeps its split.
    for r in moved.itertuples():
        in_class = first[first["landmark_id"] == r.landmark_id]
        assert r.split == "test" and (in_class["split"] == "test").sum() == 1, r
    assert len(moved) <= 3

    other_seed = sample_folder(folder_data(root, "data.seed=1"), workers=2).rows.set_index("id")
    assert (other_seed.loc[grown.index, "split"] != grown["split"]).any()


def test_small_classes_are_reported_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "photos"
    write(root / "lonely" / "x.jpg", b"x")
    write(root / "solo" / "y.jpg", b"y")
    for i in range(4):
        write(root / "big" / f"{i}.jpg", str(i).encode())
    with caplog.at_level(logging.INFO, logger="landmark_ae.data.sources.folder"):
        rows = sample_folder(folder_data(root), workers=1).rows
    lines = [r.getMessage() for r in caplog.records if "fewer than" in r.getMessage()]
    assert lines == ["2 classes have fewer than 2 images (lonely, solo): all kept in train, never queried"]
    assert rows.loc[rows["landmark_id"] != 0, "split"].tolist() == ["train", "train"]  # big is class 0


def test_relative_paths_round_trip_through_splits_csv() -> None:
    for name in ["a/b.jpg", "100%.jpg", "tab\there.jpg", os.fsdecode(b"caf\xe9.jpg"), "caf\u00e9.jpg"]:
        text = encode_rel(name)
        assert decode_rel(text) == name and text.isprintable()
    assert encode_rel("caf\u00e9.jpg") == "caf\u00e9.jpg"  # UTF-8 names stay readable


def test_folder_errors_are_one_line(tmp_path: Path) -> None:
    from landmark_ae.errors import UserError

    with pytest.raises(UserError, match="data.root is required"):
        sample_folder(compose("prepare", "data=folder").data, workers=1)
    with pytest.raises(UserError, match="no images found"):
        sample_folder(folder_data(tmp_path), workers=1)
    with pytest.raises(UserError, match="data.labels=bogus"):
        sample_folder(folder_data(tmp_path, "data.labels=bogus"), workers=1)


# ---- from a folder to answers: class names travel; unlabelled runs ---------------------------


def class_folders(root: Path, classes: tuple[str, ...] = ("bridge", "colosseum", "tower"), per_class: int = 8) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write(root / name / f"{i}.jpg", jpeg(100 * c + i, size=(64, 48)))
    return root


def pipeline(tmp: Path, *prepare: str) -> dict[str, Path]:
    """prepare (data=folder) -> train M1 one epoch -> embed, in-process; the run dirs."""
    runs = {name: tmp / name for name in ("prepare", "train", "embed")}
    run_in_process("prepare", "data=folder", f"data.root={class_folders(tmp / 'photos')}", *prepare,
                   "data.test_fraction=0.2", "progress=false", run_dir=runs["prepare"])
    run_in_process("train", "data=folder", f"data_dir={runs['prepare']}", "model=m1", "epochs=1", "batch_size=8",
                   "lr_schedule=constant", "progress=false", run_dir=runs["train"])
    run_in_process("embed", f"train_run={runs['train']}", "progress=false", run_dir=runs["embed"])
    return runs


@pytest.fixture(scope="module")
def labelled_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pipeline(tmp_path_factory.mktemp("labelled"))


def test_class_names_reach_query_serve_and_evaluate(labelled_runs: dict[str, Path], tmp_path: Path) -> None:
    from landmark_ae.retrieval.embed_run import EmbedRun
    from landmark_ae.retrieval.retriever import Retriever

    run = EmbedRun(labelled_runs["embed"])
    assert run.class_names == {0: "bridge", 1: "colosseum", 2: "tower"}
    retriever = Retriever(run)  # what serve answers with, and query
    image = retriever.load_image(next((labelled_runs["prepare"] / "test").iterdir()))
    hits = retriever.neighbours(image[None], 4)[0]
    assert all(h["class_name"] == run.class_names[h["landmark_id"]] for h in hits)

    run_in_process("evaluate", f"embed_run={labelled_runs['embed']}", run_dir=tmp_path / "evaluate")
    table = pd.read_csv(tmp_path / "evaluate" / "per_landmark_ap.csv")
    assert list(table.columns) == ["landmark_id", "name", "n_queries", "ap"]
    assert {(r.landmark_id, r.name) for r in table.itertuples()} <= {(0, "bridge"), (1, "colosseum"), (2, "tower")}
    assert len(table)


def test_unlabelled_photos_train_embed_and_answer_but_evaluate_needs_labels(tmp_path: Path) -> None:
    from landmark_ae.errors import UserError
    from landmark_ae.retrieval.embed_run import EmbedRun
    from landmark_ae.retrieval.retriever import Retriever

    runs = pipeline(tmp_path, "data.labels=none")
    run = EmbedRun(runs["embed"])
    assert not run.labelled and run.class_names == {}
    retriever = Retriever(run)
    hits = retriever.neighbours(retriever.load_image(tmp_path / "photos" / "tower" / "0.jpg")[None], 3)[0]
    assert len(hits) == 3 and all(h["landmark_id"] is None and h["class_name"] is None for h in hits)
    with pytest.raises(UserError) as info:
        run_in_process("evaluate", f"embed_run={runs['embed']}", run_dir=tmp_path / "evaluate")
    assert "prepared without labels (data.labels=none): evaluate needs labels" in str(info.value)
    assert "\n" not in str(info.value) and not (tmp_path / "evaluate" / "metrics.json").exists()


def test_landmarks10_names_from_a_gldv2_root(tmp_path: Path) -> None:
    from landmark_ae.data.classes import class_names

    root, prepared = tmp_path / "landmarks10", tmp_path / "prepare"
    write(root / "landmarks.csv", b"landmark_id,name\n0,colosseum\n1,petronas_towers\n")
    write(prepared / "dataset.json", f'{{"source_root": "{root}"}}'.encode())
    assert class_names(prepared) == {0: "colosseum", 1: "petronas_towers"}
    assert class_names(tmp_path / "gone") == {} and class_names(None) == {}


def test_one_query_from_a_folder_shows_class_names(labelled_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    # in-process: the TSV through the real CLI is test_query.py's (test_query_tsv_ranks_the_near_duplicate_first)
    photo = labelled_runs["prepare"].parent / "photos" / "colosseum" / "3.jpg"
    capsys.readouterr()
    run_in_process("query", f"embed_run={labelled_runs['embed']}", f"image={photo}", "k=3", run_dir=tmp_path / "query")
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0][-1] == "class_name" and len(rows) == 4
    names = {"0": "bridge", "1": "colosseum", "2": "tower"}
    assert all(r[-1] == names[r[3]] for r in rows[1:])
