"""The prepared-dataset reader (landmark_ae/data/prepared.py): its name comes from the prepare run
itself, and damaged arrays are named in one line instead of numpy's errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_in_process

from landmark_ae.data.prepared import dataset_name, load_split
from landmark_ae.errors import UserError
from landmark_ae.model.checkpoints import load_checkpoint


def copy_of(prepared: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "prepared"
    shutil.copytree(prepared, copy, ignore=shutil.ignore_patterns("*.jpg"))
    return copy


@pytest.mark.parametrize(("split", "damage"), [
    ("train", lambda b: b[: len(b) // 2]),  # truncated: "mmap length is greater than file size"
    ("val", lambda b: b"a text file, not an array\n"),  # numpy would ask for pickle
])
def test_damaged_arrays_are_named(tiny_prepared, tmp_path, split, damage):
    data = copy_of(tiny_prepared, tmp_path)
    path = data / f"{split}.npy"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UserError) as info:  # the prepare run's manifest catches it first
        load_split(data, split)
    assert str(info.value).startswith(f"{path} is truncated or was changed") and "landmark-ae prepare" in str(info.value)
    (data / "manifest.json").unlink()  # a run from before manifests: numpy's reader meets the damage
    with pytest.raises(UserError) as info:
        load_split(data, split)
    assert str(info.value).startswith(f"{path} is damaged") and "landmark-ae prepare" in str(info.value)


def test_the_dataset_is_named_by_its_prepare_run_not_the_command_line(tiny_prepared, tmp_path):
    assert dataset_name(tiny_prepared) == "gldv2"
    # trained with the default data=synthetic on a gldv2 prepare run: recorded as gldv2 everywhere
    train = tmp_path / "train"
    run_in_process("train", f"data_dir={tiny_prepared}", "model=m1", "epochs=1", "progress=false", run_dir=train)
    assert json.loads((train / "run.json").read_text())["data"] == "gldv2"
    assert load_checkpoint(train / "best.pt")["data"] == "gldv2"
    embed = tmp_path / "embed"
    run_in_process("embed", f"train_run={train}", "progress=false", run_dir=embed)
    assert json.loads((embed / "embed.json").read_text())["data"] == "gldv2"
    evaluate = tmp_path / "evaluate"
    run_in_process("evaluate", f"embed_run={embed}", "pixel_baseline=false", "n_init=1", run_dir=evaluate)
    assert json.loads((evaluate / "metrics.json").read_text())["data"] == "gldv2"

    hollow = copy_of(tiny_prepared, tmp_path / "hollow")
    (hollow / "dataset.json").unlink()
    with pytest.raises(UserError, match="not a complete prepare run \\(dataset.json missing\\)"):
        dataset_name(hollow)


def test_a_split_loaded_without_its_manifest_is_checked_against_the_manifests_row_count(tmp_path):
    """load_split(manifest=False) (train's path) counts the manifest's rows without loading the table:
    a header alone is 0 rows, a missing final newline still ends a row; a count that does not match
    the array is refused."""
    import numpy as np

    for text, rows in (("id,landmark_id\n", 0), ("id,landmark_id\na,1\nb,2\n", 2), ("id,landmark_id\na,1\nb,2", 2)):
        (tmp_path / "train.csv").write_text(text)
        np.save(tmp_path / "train.npy", np.zeros((rows, 4, 4, 3), np.uint8))
        split = load_split(tmp_path, "train", manifest=False)
        assert split.manifest is None and split.images.shape[0] == rows
        np.save(tmp_path / "train.npy", np.zeros((rows + 1, 4, 4, 3), np.uint8))
        with pytest.raises(UserError, match=rf"train.npy \({rows + 1}, 4, 4, 3\) does not match train.csv \({rows} rows\)"):
            load_split(tmp_path, "train", manifest=False)
