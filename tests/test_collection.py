"""Image collections (landmark_ae/retrieval/collection.py): the one rule `embed images=`, `query image=`
(folders) and `query image=-` (stdin) share: which files are listed, how a list line is read, and how
one file is read (regular files only, byte-capped, never blocking on a FIFO). Real files, FIFOs and
symlinks in tmp_path; no model except in the last test."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import run_in_process
from PIL import Image

from landmark_ae.data.images import ImageError
from landmark_ae.retrieval import collection as coll
from landmark_ae.retrieval.collection import decode_batches, list_entry, open_collection, read_image_file

NON_UTF8 = os.fsdecode(b"caf\xe9")  # a Latin-1 name: its byte 0xe9 is not UTF-8


def jpeg_file(path: Path, shade: int = 90) -> Path:
    Image.new("RGB", (40, 30), (shade, 40, 200 - shade)).save(path, format="JPEG")
    return path


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """call() on a thread; fails (instead of hanging the run) if it has not returned in time."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def reason_of(path: Path | str, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ImageError) as info:
        within(10, lambda: read_image_file(path, **kwargs))
    return info.value.reason, info.value.detail


def test_read_image_file_takes_regular_files_only_capped_in_bytes(tmp_path):
    good = jpeg_file(tmp_path / "good.jpg")
    assert read_image_file(good) == good.read_bytes()
    link = tmp_path / "link.jpg"
    link.symlink_to(good)
    assert read_image_file(link) == good.read_bytes()  # a symlink is judged by what it names
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert reason_of(tmp_path / "fifo.jpg") == ("not_a_file", "a FIFO")  # no writer: open would block
    assert reason_of(tmp_path / "folder.jpg") == ("not_a_file", "a directory")
    assert reason_of(tmp_path / "zero.jpg") == ("not_a_file", "a character device")  # not 1 GB of zeros
    assert reason_of("/proc/self/mem")[0] == "unreadable"  # a regular file whose read fails
    assert reason_of(tmp_path / "empty.jpg") == ("empty", "")
    assert reason_of(tmp_path / "gone.jpg") == ("missing", "")
    assert reason_of(tmp_path / "gone" / "x.jpg") == ("missing", "")
    assert reason_of(f"{good}\x00.jpg") == ("bad_path", "its name holds a NUL byte")
    size = good.stat().st_size
    assert read_image_file(good, max_bytes=size) == good.read_bytes()
    assert reason_of(good, max_bytes=size - 1)[0] == "too_large"
    assert coll.MAX_IMAGE_BYTES == 20 * 2**20  # serve's max_body_mb default: one cap for a file and a body


def test_a_fifo_swapped_in_after_the_check_cannot_block(tmp_path, monkeypatch):
    # The stat said "regular file" (a FIFO put in its place since): the O_NONBLOCK open returns at
    # once and the check on the open file refuses it.
    fifo = tmp_path / "swapped.jpg"
    os.mkfifo(fifo)
    real_kind, calls = coll._kind, []

    def stale_then_real(mode: int) -> str | None:  # the first look (os.stat) saw the regular file
        calls.append(mode)
        return None if len(calls) == 1 else real_kind(mode)

    monkeypatch.setattr(coll, "_kind", stale_then_real)
    assert reason_of(fifo) == ("not_a_file", "a FIFO")
    assert len(calls) == 2


def test_a_list_line_drops_bom_spaces_crlf_blanks_and_comments():
    assert list_entry(b"\xef\xbb\xbf  photos/a b.jpg \t\r\n") == "photos/a b.jpg"  # inner spaces kept
    assert list_entry("\ufeffx.jpg") == "x.jpg"
    assert list_entry(b"x.jpg\xc2\xa0\n") == "x.jpg\xa0"  # only ASCII whitespace is dropped
    assert [list_entry(line) for line in (b"\n", b"   \r\n", b"# a comment\n", b"  # indented\n")] == [None] * 4
    assert list_entry(b"caf\xe9.jpg\n") == f"{NON_UTF8}.jpg"  # bytes as they are: os.fsencode gives them back
    assert os.fsencode(list_entry(b"caf\xe9.jpg")) == b"caf\xe9.jpg"


def test_open_collection_recurses_takes_any_suffix_case_and_reads_list_files_by_the_line_rule(tmp_path, caplog):
    root = tmp_path / "photos"
    (root / "b" / "deep").mkdir(parents=True)
    jpeg_file(root / "a.JPG")
    jpeg_file(root / "b" / "deep" / "c.Jpeg")
    jpeg_file(root / "b" / "d.png")
    (root / "notes.txt").write_text("not listed: no image suffix")
    (root / "loop").symlink_to(root)  # a link to a folder is not entered: no endless walk
    listed = open_collection(root)
    assert [p.relative_to(root).as_posix() for p in listed.paths] == ["a.JPG", "b/d.png", "b/deep/c.Jpeg"]

    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xef\xbb\xbfphotos/a.JPG  \r\n\r\n# holiday\n  photos/b/d.png\n\tphotos/a.JPG\n")
    from_list = open_collection(listing)
    assert from_list.paths == [root / "a.JPG", root / "b" / "d.png"]  # BOM, padding, comment, repeat gone
    assert from_list.ids == ["a", "d"]


def test_a_non_utf8_name_is_listed_hashed_by_its_bytes_and_recorded_escaped(tmp_path, caplog):
    root = tmp_path / "photos"
    root.mkdir()
    jpeg_file(root / "plain.jpg")
    jpeg_file(root / f"{NON_UTF8}.jpg")
    listed = within(20, lambda: open_collection(root))  # no UnicodeEncodeError while making ids
    names = [p.name for p in listed.paths]
    assert names == sorted(names) and len(names) == 2
    raw = os.fsencode(root / f"{NON_UTF8}.jpg")
    i = names.index(f"{NON_UTF8}.jpg")
    assert listed.ids[i] == hashlib.sha1(b"caf\xe9.jpg").hexdigest()[:16]  # stems unsafe: all hashed
    assert listed.ids[1 - i] == hashlib.sha1(b"plain.jpg").hexdigest()[:16]  # = sha1 of its UTF-8
    assert listed.path_text(i) == str(root / "caf\\xe9.jpg")
    assert os.fsencode(listed.paths[i]) == raw  # the real name is what is read


def test_decode_batches_skips_what_is_no_regular_image_and_never_blocks(tmp_path, caplog):
    root = tmp_path / "photos"
    root.mkdir()
    jpeg_file(root / "a.jpg")
    jpeg_file(root / f"{NON_UTF8}.jpg", shade=20)
    os.mkfifo(root / "b_fifo.jpg")  # a FIFO named *.jpg: nobody writes to it
    (root / "c_zero.jpg").symlink_to("/dev/zero")
    (root / "d_text.jpg").write_text("not a JPEG")
    (root / "e_dir.jpg").mkdir()  # a folder named like an image is walked into, not read
    jpeg_file(root / "e_dir.jpg" / "inside.jpg", shade=150)
    listed = open_collection(root)
    with caplog.at_level(logging.WARNING):
        batches = within(30, lambda: list(decode_batches(listed, 16, batch_size=3, workers=2)))
    decoded = [listed.paths[i].name for positions, _, _ in batches for i in positions]
    assert sorted(decoded) == sorted(["a.jpg", f"{NON_UTF8}.jpg", "inside.jpg"])
    failures = {Path(row[1]).name: row[2] for _, _, rows in batches for row in rows}
    assert failures == {"b_fifo.jpg": "not_a_file", "c_zero.jpg": "not_a_file", "d_text.jpg": "not_an_image"}
    for name in failures:
        assert f"skipped {root / name}: it " in caplog.text  # one warning line each
    # every recorded path fits a UTF-8 CSV (embed's index.csv and failures.csv)
    recorded = [listed.path_text(i) for i in range(len(listed))]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([[p] for p in recorded])
    buffer.getvalue().encode("utf-8")
    assert str(root / "caf\\xe9.jpg") in recorded


def test_embed_images_of_a_folder_with_a_non_utf8_name_and_a_fifo(tiny_trained, tmp_path):
    # Before: UnicodeEncodeError for the name (and a debris run dir), a hang on the FIFO.
    root = tmp_path / "photos"
    root.mkdir()
    jpeg_file(root / "plain.jpg")
    jpeg_file(root / f"{NON_UTF8}.jpg", shade=30)
    os.mkfifo(root / "pipe.jpg")
    run = tmp_path / "embed"
    out = within(120, lambda: run_in_process("embed", f"train_run={tiny_trained}", f"images={root}", "progress=false",
                                             run_dir=run))
    assert out["images"] == 2 and out["failed"] == 1
    index = list(csv.DictReader(open(run / "index.csv", encoding="utf-8")))
    assert sorted(row["path"] for row in index) == sorted([str(root / "plain.jpg"), str(root / "caf\\xe9.jpg")])
    failures = list(csv.DictReader(open(run / "failures.csv", encoding="utf-8")))
    assert [(Path(f["path"]).name, f["reason"], f["detail"]) for f in failures] == [("pipe.jpg", "not_a_file", "a FIFO")]
