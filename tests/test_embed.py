"""`embed` (landmark_ae/retrieval/embed.py, embed_run.py): the stored float32 embeddings and index of
every prepared image, and the runs it refuses to embed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_in_process

from landmark_ae.errors import UserError
from landmark_ae.model.checkpoints import load_checkpoint, model_from_checkpoint


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
