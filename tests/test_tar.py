"""source=tar (landmark_ae/data/sources/tar.py): official-layout shards served by a real aiohttp server on
127.0.0.1, and from a local folder."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import hexid, jpeg, outcome, run_in_process
from fake_gldv2_server import FakeServer


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


@pytest.fixture
def shards(tmp_path: Path) -> tuple[Path, Path, dict[str, str | None], dict[int, set[str]]]:
    """Three shards in the official layout (<base>/train/, <base>/md5sum/train/) and a train.csv.

    Sampled ids are spread over the shards; shard 1 will be served corrupted; one sampled id is in no
    shard; one member is not an image; unsampled and oddly named members are ignored.
    """
    base = tmp_path / "gldv2"
    (base / "train").mkdir(parents=True)
    (base / "md5sum" / "train").mkdir(parents=True)
    rows, expected, where = [], {}, {0: set(), 1: set(), 2: set()}
    for i in range(30):
        rows.append((hexid(i), "", 1000 + i % 3))
        expected[hexid(i)] = None
        where[i % 3].add(hexid(i))
    for s in range(3):
        with tarfile.open(base / "train" / f"images_{s:03d}.tar", "w") as tf:
            for image_id in sorted(where[s]):
                add(tf, f"{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg", jpeg(int(image_id, 16) % 997))
            add(tf, f"f/f/f/{'f' * 16}.jpg", jpeg(5))  # not sampled
            add(tf, "../../escape.jpg", jpeg(6))  # never a path: members are matched by id only
        digest = hashlib.md5((base / "train" / f"images_{s:03d}.tar").read_bytes()).hexdigest()
        (base / "md5sum" / "train" / f"md5.images_{s:03d}.txt").write_text(f"{digest}  images_{s:03d}.tar\n")
    with tarfile.open(base / "train" / "images_002.tar", "a") as tf:  # rewrite md5 after appending
        add(tf, f"{hexid(40)[0]}/{hexid(40)[1]}/{hexid(40)[2]}/{hexid(40)}.jpg", b"<html>nope</html>")
    digest = hashlib.md5((base / "train" / "images_002.tar").read_bytes()).hexdigest()
    (base / "md5sum" / "train" / "md5.images_002.txt").write_text(f"{digest}  images_002.tar\n")
    where[2].add(hexid(40))
    rows.append((hexid(40), "", 1001))
    expected[hexid(40)] = "not_an_image"
    rows.append((hexid(41), "", 1002))  # in no shard
    expected[hexid(41)] = "missing"
    rows.append(("../../x", "", 1000))
    csv = tmp_path / "train.csv"
    pd.DataFrame(rows, columns=["id", "url", "landmark_id"]).to_csv(csv, index=False)
    return base, csv, expected, where


ARGS = ["progress=false", "data.landmark_min=1000", "data.landmark_max=1003", "data.tar.shards=[0,1,2]",
        "data.tar.retries=1", "data.tar.concurrency=2"]


def test_tar_over_http_md5_mismatch_is_retried_reported_then_completed(shards, tmp_path):
    base, csv, expected, where = shards
    with FakeServer(root=base.parent) as server:
        good = (base / "train" / "images_001.tar").read_bytes()
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF  # one flipped byte: still a readable tar, the md5 catches it
        server.file_faults["gldv2/train/images_001.tar"] = (bytes(bad), 1e9)
        run_dir = tmp_path / "run"
        args = ["data=gldv2_tar", f"data.csv={csv}", f"data.tar.base={server.base}/files/gldv2", *ARGS]
        res = run_in_process("prepare", *args, run_dir=run_dir)
        first = {**expected, **{i: "md5_mismatch" for i in where[1]}}
        assert {k: v for k, v in outcome(run_dir).items() if k in first} == first
        assert res["failed_md5_mismatch"] == len(where[1])
        assert server.hits["/files/gldv2/train/images_001.tar"] == 2  # read, retried once, then reported
        summary = pd.read_json(run_dir / "dataset.json", typ="series")
        assert "001" in summary["tar_shards"]["failed"]
        assert not list(tmp_path.rglob("escape.jpg")) and not list(run_dir.rglob("*.tmp"))

        # rerun with the shard fixed: only shard 1 is read again
        del server.file_faults["gldv2/train/images_001.tar"]
        server.reset_hits()
        res2 = run_in_process("prepare", *args, f"resume={run_dir}", run_dir=run_dir)
        assert {k: v for k, v in outcome(run_dir).items() if k in expected} == expected
        tars = {p for p in server.hits if p.endswith(".tar")}
        assert tars == {"/files/gldv2/train/images_001.tar"}, server.hits
        assert res2["failed"] == 3  # not_an_image, missing, invalid_id


def test_tar_from_a_local_folder(shards, tmp_path):
    base, csv, expected, _ = shards
    flat = tmp_path / "flat"  # the shards and md5 lists side by side, as people download them
    flat.mkdir()
    for p in list((base / "train").iterdir()) + list((base / "md5sum" / "train").iterdir()):
        (flat / p.name).write_bytes(p.read_bytes())
    res = run_in_process("prepare", "data=gldv2_tar", f"data.csv={csv}", f"data.tar.base={flat}", *ARGS, run_dir=tmp_path / "run")
    assert {k: v for k, v in outcome(tmp_path / "run").items() if k in expected} == expected
    assert res["train"] + res["val"] + res["test"] == 30


def test_tar_bad_settings_are_user_errors(shards, tmp_path):
    from landmark_ae.errors import UserError

    _, csv, _, _ = shards
    with pytest.raises(UserError, match="neither"):
        run_in_process("prepare", "data=gldv2_tar", f"data.csv={csv}", f"data.tar.base={tmp_path / 'nowhere'}", *ARGS,
                       run_dir=tmp_path / "r1")
    with pytest.raises(UserError, match="0..499"):
        run_in_process("prepare", "data=gldv2_tar", f"data.csv={csv}", f"data.tar.base={tmp_path}", "data.tar.shards=[500]",
                       run_dir=tmp_path / "r2")
