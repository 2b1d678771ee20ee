"""`query` (landmark_ae/retrieval/query.py): nearest database images of any readable image, as TSV,
JSON or a table; the pipeline's last step through the CLI, the rest in-process."""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli, run_in_process
from PIL import Image

from landmark_ae.errors import UserError
from landmark_ae.output import StdoutClosed, printable, tsv_field
from landmark_ae.runs import MANIFEST, write_manifest


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
    proc = run_cli("query", f"image={query}", "k=5", f"embed_run={tiny_embedded}", outputs=tiny_embedded.parent.parent)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout), delimiter="\t"))
    assert list(rows[0]) == ["rank", "distance", "id", "landmark_id", "path", "query", "class_name"]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    distances = [float(r["distance"]) for r in rows]
    assert distances == sorted(distances)
    assert rows[0]["id"] == target["id"] and int(rows[0]["landmark_id"]) == target["landmark_id"]
    assert [line.split("\t")[2] for line in proc.stdout.splitlines()][1] == target["id"]  # `cut -f3`
    assert all(r["query"] == str(query) for r in rows)


def query(capsys, embed_run: Path, run_dir: Path, *args: str) -> str:
    """Run query in-process; its stdout."""
    capsys.readouterr()
    run_in_process("query", f"embed_run={embed_run}", *args, run_dir=run_dir)
    return capsys.readouterr().out


def test_query_accepts_any_readable_image_and_lists_folders(tiny_embedded, tiny_prepared, tmp_path, capsys):
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
    out = json.loads(query(capsys, tiny_embedded, tmp_path / "q1", f"image={folder}", "k=3", "format=json",
                           "save_grid=true"))
    assert [Path(r["query"]).name for r in out] == ["exif.jpg", "gray.png", "palette.png", "rgba.png"]
    assert all(len(r["neighbours"]) == 3 for r in out)
    by_name = {Path(r["query"]).name: r["neighbours"][0]["id"] for r in out}
    assert by_name["exif.jpg"] == by_name["rgba.png"] == manifest["id"][3]  # EXIF rotation undone
    assert (tmp_path / "q1" / "retrieval_grid.png").read_bytes()[:4] == b"\x89PNG"

    table = query(capsys, tiny_embedded, tmp_path / "q2", f"image=[{folder / 'gray.png'},{folder / 'rgba.png'}]",
                  "k=2", "format=table")
    assert "gray.png" in table and "rgba.png" in table


def test_query_k_larger_than_database_returns_all(tiny_embedded, tiny_prepared, tmp_path, capsys, caplog):
    n_db = sum(len(pd.read_csv(tiny_prepared / f"{s}.csv")) for s in ("train", "val"))
    image = next((tiny_prepared / "test").glob("*.jpg"))
    with caplog.at_level(logging.WARNING):
        out = query(capsys, tiny_embedded, tmp_path / "q", f"image={image}", "k=100000")
    assert len(out.splitlines()) == 1 + n_db
    assert "larger than the database" in caplog.text


def test_query_bad_images(tiny_embedded, tmp_path):
    good = Image.new("RGB", (64, 64), (120, 30, 30))
    good.save(tmp_path / "good.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "good.jpg").read_bytes()[:200])
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "no_images").mkdir()
    cases = {"missing.jpg": "does not exist", "empty.jpg": "is empty", "truncated.jpg": "truncated or corrupt",
             "text.jpg": "is not an image", "no_images": "holds no images"}
    for name, expected in cases.items():
        with pytest.raises(UserError) as info:
            run_in_process("query", f"image={tmp_path / name}", f"embed_run={tiny_embedded}", run_dir=tmp_path / "run")
        assert expected in str(info.value) and name in str(info.value) and "\n" not in str(info.value)


def test_query_refuses_what_is_not_its_embed_runs(tiny_embedded, tiny_trained, tiny_prepared, tmp_path):
    image = next((tiny_prepared / "test").glob("*.jpg"))
    hollow = tmp_path / "hollow"
    hollow.mkdir()
    with pytest.raises(UserError, match="not a complete embed run"):
        run_in_process("query", "image=x.jpg", f"embed_run={hollow}", run_dir=tmp_path / "r1")
    # the same architecture with other weights: dimensions match, but these embeddings are not its own
    ckpt = torch.load(tiny_trained / "best.pt", weights_only=True)
    first = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][first] = ckpt["state_dict"][first] + 0.01
    other = tmp_path / "other" / "best.pt"
    other.parent.mkdir()
    torch.save(ckpt, other)
    with pytest.raises(UserError, match="were made by another checkpoint"):
        run_in_process("query", f"image={image}", f"embed_run={tiny_embedded}", f"checkpoint={other}",
                       run_dir=tmp_path / "r2")


def test_m5_query_through_its_48px_input_and_stored_whitening_finds_itself(tiny_contrastive, tiny_prepared,
                                                                            tmp_path, capsys):
    # The headline post-processing, then a query: a database image finds itself first (distance ~0).
    embed = run_in_process("embed", f"train_run={tiny_contrastive}", "l2=true", "pca_whiten=8", "progress=false",
                           run_dir=tmp_path / "embed")
    assert embed["dim"] == 8
    target = pd.read_csv(tiny_prepared / "train.csv", dtype={"id": str}).iloc[3]
    out = query(capsys, embed["run_dir"], tmp_path / "q", f"image={tiny_prepared / target['path']}", "k=3")
    first = out.splitlines()[1].split("\t")
    assert first[2] == target["id"] and float(first[1]) < 1e-3


def test_m5_embedded_at_a_larger_input_size_is_queried_at_that_size(tiny_contrastive, tiny_prepared, tmp_path,
                                                                      capsys):
    # input_size=64 (M5 trains at 48): embed.json records it and query resizes its images to 64 too,
    # so a database image still finds itself at distance ~0; at 48 it would not.
    embed = run_in_process("embed", f"train_run={tiny_contrastive}", "input_size=64", "l2=true", "progress=false",
                           run_dir=tmp_path / "embed")
    meta = json.loads((embed["run_dir"] / "embed.json").read_text())
    assert (meta["input_size"], meta["model_config"]["input_size"], meta["dim"]) == (64, 48, 192)
    at48 = run_in_process("embed", f"train_run={tiny_contrastive}", "l2=true", "progress=false",
                          run_dir=tmp_path / "embed48")
    assert json.loads((at48["run_dir"] / "embed.json").read_text())["input_size"] == 48
    rows64, rows48 = (np.load(run["run_dir"] / "embeddings.npy") for run in (embed, at48))
    assert not np.allclose(rows64, rows48, atol=1e-3)
    target = pd.read_csv(tiny_prepared / "train.csv", dtype={"id": str}).iloc[5]
    out = query(capsys, embed["run_dir"], tmp_path / "q", f"image={tiny_prepared / target['path']}", "k=3")
    first = out.splitlines()[1].split("\t")
    assert first[2] == target["id"] and float(first[1]) < 1e-3
    # An embed run made before input_size existed records none: queried at the model's trained size.
    meta48 = json.loads((at48["run_dir"] / "embed.json").read_text())
    del meta48["input_size"]
    (at48["run_dir"] / "embed.json").write_text(json.dumps(meta48))
    manifest = json.loads((at48["run_dir"] / MANIFEST).read_text())
    write_manifest(at48["run_dir"], list(manifest["artifacts"]))  # as that older run would have written it
    out = query(capsys, at48["run_dir"], tmp_path / "q48", f"image={tiny_prepared / target['path']}", "k=3")
    first = out.splitlines()[1].split("\t")
    assert first[2] == target["id"] and float(first[1]) < 1e-3


def test_query_reads_paths_from_stdin_in_batches_and_skips_unreadable_ones(tiny_embedded, tiny_prepared, tmp_path,
                                                                           capsys, caplog, monkeypatch):
    images = sorted((tiny_prepared / "test").glob("*.jpg"))[:5]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    lines = [str(images[0]), "", str(broken), *map(str, images[1:])]
    stdin_of(monkeypatch, ("\n".join(lines) + "\n").encode())
    with caplog.at_level(logging.WARNING):
        piped = query(capsys, tiny_embedded, tmp_path / "piped", "image=-", "k=3", "format=jsonl", "batch_size=2")
    answers = [json.loads(line) for line in piped.splitlines()]
    assert [a["query"] for a in answers] == list(map(str, images))
    assert all(len(a["neighbours"]) == 3 and a["neighbours"][0]["rank"] == 1 for a in answers)
    assert f"skipped: query image {broken} is not an image" in caplog.text
    # the same neighbours as naming the images on the command line
    listed = query(capsys, tiny_embedded, tmp_path / "listed", f"image=[{','.join(map(str, images))}]", "k=3",
                   "format=json")
    together = json.loads(listed)
    ids = [[h["id"] for h in a["neighbours"]] for a in answers]
    assert ids == [[h["id"] for h in a["neighbours"]] for a in together]
    # batches of 2 vs one batch of 5: the same up to float rounding in the convolutions
    assert np.allclose([[h["distance"] for h in a["neighbours"]] for a in answers],
                       [[h["distance"] for h in a["neighbours"]] for a in together], rtol=1e-4)


# ---- the one collection rule, TSV escaping, stdin, devices, a closed stdout (issue 22, items 11-13) ----


def tsv_unescape(field: str) -> str:
    """A TSV field back to its text (PostgreSQL COPY's text format: \\\\ \\t \\n \\r \\xNN)."""
    return os.fsdecode(codecs.escape_decode(field.encode())[0])


def test_tsv_field_escapes_what_would_break_a_row():
    assert tsv_field("plain/path.jpg") == "plain/path.jpg"
    assert tsv_field("a\tb\nc\rd\\e") == "a\\tb\\nc\\rd\\\\e"
    assert tsv_field(os.fsdecode(b"caf\xe9")) == "caf\\xe9" and tsv_field("nul\x00") == "nul\\x00"
    assert tsv_field(None) == "" and tsv_field(7) == "7"
    for text in ("a\tb\nc\rd\\e", "x\\ty", os.fsdecode(b"caf\xe9\\xe9")):
        assert tsv_unescape(tsv_field(text)) == text


def test_query_folder_recurses_skips_bad_files_and_escapes_tsv_fields(tiny_embedded, tiny_prepared, tmp_path, capsys,
                                                                       caplog):
    src = next((tiny_prepared / "test").glob("*.jpg"))
    folder = tmp_path / "queries"
    (folder / "sub").mkdir(parents=True)
    names = ["a\ttab.jpg", "new\nline.jpg", "back\\slash.jpg", os.fsdecode(b"caf\xe9.jpg")]
    for name in names:
        shutil.copy(src, folder / name)
    shutil.copy(src, folder / "sub" / "UPPER.JPG")  # below the top, suffix in capitals
    (folder / "broken.jpg").write_bytes(b"not a JPEG")
    os.mkfifo(folder / "fifo.jpg")
    with caplog.at_level(logging.WARNING):
        out = query(capsys, tiny_embedded, tmp_path / "q", f"image={folder}", "k=2")
    lines = out.splitlines()
    assert all(len(line.split("\t")) == 7 for line in lines) and len(lines) == 1 + 2 * 5
    queried = {tsv_unescape(line.split("\t")[5]) for line in lines[1:]}  # paths as recorded: non-UTF-8 bytes as \xNN
    assert queried == {printable(folder / n) for n in names} | {str(folder / "sub" / "UPPER.JPG")}
    assert printable(folder / names[3]) == f"{folder}/caf\\xe9.jpg"
    assert f"skipped: query image {folder / 'broken.jpg'} is not an image" in caplog.text
    assert f"skipped: query image {folder / 'fifo.jpg'} is a FIFO, not a regular file" in caplog.text
    record = json.loads((tmp_path / "q" / "run.json").read_text())
    assert (record["status"], record["queries"], record["skipped"]) == ("complete", 5, 2)


def stdin_of(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_query_stdin_answers_good_lines_and_skips_each_bad_one(tiny_embedded, tiny_prepared, tmp_path, capsys,
                                                               caplog, monkeypatch):
    good = sorted((tiny_prepared / "test").glob("*.jpg"))[:2]
    odd = tmp_path / os.fsdecode(b"caf\xe9.jpg")
    shutil.copy(good[0], odd)
    os.mkfifo(tmp_path / "fifo.jpg")
    lines = [b"\xef\xbb\xbf" + bytes(good[0]) + b"  \r", b"# a comment", bytes(tmp_path) + b"/a\x00b.jpg",
             b"/dev/zero", b"/proc/self/mem", bytes(tmp_path / "fifo.jpg"), bytes(tmp_path), b"", os.fsencode(odd),
             b"\t" + bytes(good[1])]
    stdin_of(monkeypatch, b"\n".join(lines) + b"\n")
    with caplog.at_level(logging.WARNING):
        out = query(capsys, tiny_embedded, tmp_path / "q", "image=-", "k=1", "batch_size=2")
    rows = [line.split("\t") for line in out.splitlines()[1:]]
    assert [tsv_unescape(r[5]) for r in rows] == [str(good[0]), printable(odd), str(good[1])]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped:")]
    assert skipped == [f"skipped: query image {tmp_path}/a\\x00b.jpg is not a usable path: its name holds a NUL byte",
                       "skipped: query image /dev/zero is a character device, not a regular file",
                       "skipped: query image /proc/self/mem cannot be read: Input/output error",
                       f"skipped: query image {tmp_path / 'fifo.jpg'} is a FIFO, not a regular file",
                       f"skipped: query image {tmp_path} is a directory, not a regular file"]


def test_query_that_answers_nothing_is_a_one_line_error(tiny_embedded, tmp_path, capsys, monkeypatch):
    def refused(*args: str) -> str:
        capsys.readouterr()
        with pytest.raises(UserError) as info:
            run_in_process("query", f"embed_run={tiny_embedded}", *args, run_dir=tmp_path / "q")
        assert capsys.readouterr().out == "" and "\n" not in str(info.value)
        return str(info.value)

    stdin_of(monkeypatch, b"/nowhere.jpg\n/dev/zero\n")
    assert refused("image=-") == ("none of the 2 query images could be used (missing: 1, not_a_file: 1): each is "
                                  "named in a `skipped:` line above")
    stdin_of(monkeypatch, b"\n# nothing\n")
    assert refused("image=-").startswith("image=-: stdin named no image path")
    assert refused("image=/dev/zero") == "query image /dev/zero is a character device, not a regular file"
    for device in ("meta", "mps"):
        assert f"device={device} " in refused("image=x.jpg", f"device={device}")


def test_a_closed_stdout_ends_query_recorded_as_interrupted(tiny_embedded, tiny_prepared, tmp_path, monkeypatch):
    # `landmark-ae query ... | head -0`: the CLI's stdout guard (landmark_ae.output, exit 141 without a
    # word: test_cli.py) raises StdoutClosed at the first write; the run says what happened.
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise StdoutClosed()

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    image = next((tiny_prepared / "test").glob("*.jpg"))
    with pytest.raises(StdoutClosed):
        run_in_process("query", f"embed_run={tiny_embedded}", f"image={image}", run_dir=tmp_path / "q")
    record = json.loads((tmp_path / "q" / "run.json").read_text())
    assert record["status"] == "interrupted" and "stdout was closed by its reader after 0 answered" in record["error"]
