"""Reading an embed run (landmark_ae/retrieval/embed_run.py): a missing or damaged artifact is one
line naming the file and how to remake it, never a silent fallback or a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_in_process

from landmark_ae.errors import UserError
from landmark_ae.retrieval.embed_run import EmbedRun


@pytest.fixture(scope="module")
def whitened(tiny_trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embed run of tiny_trained with l2 and PCA-whitening (so transform.npz matters)."""
    run_dir = tmp_path_factory.mktemp("whitened") / "embed"
    run_in_process("embed", f"train_run={tiny_trained}", "l2=true", "pca_whiten=16", "progress=false", run_dir=run_dir)
    return run_dir


def damaged(run: Path, tmp_path: Path, name: str, content: bytes | None, manifest: bool = True) -> Path:
    """A copy of `run` with `name` replaced by `content` (None: deleted); manifest=False drops the
    run's manifest too, as in runs from before manifests, so the file's own reader meets the damage."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    if not manifest:
        (copy / "manifest.json").unlink()
    if content is None:
        (copy / name).unlink()
    else:
        (copy / name).write_bytes(content)
    return copy


def refusal(run: Path) -> str:
    with pytest.raises(UserError) as info:
        EmbedRun(run).transform()
    message = str(info.value)
    assert "\n" not in message and "run `landmark-ae embed`" in message
    return message


def test_a_missing_transform_is_an_error_when_the_rows_were_post_processed(whitened, tmp_path):
    assert EmbedRun(whitened).transform().projection.shape[1] == 16
    message = refusal(damaged(whitened, tmp_path, "transform.npz", None))
    assert "transform.npz is missing" in message and "l2=True, pca_whiten=16" in message


def test_a_missing_transform_of_raw_rows_is_the_identity(tiny_embedded, tmp_path):
    run = damaged(tiny_embedded, tmp_path, "transform.npz", None)
    assert EmbedRun(run).transform().identity


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("transform.npz", b"PK\x03\x04 truncated", "transform.npz is damaged"),
    ("embeddings.npy", None, "embeddings.npy missing"),
    ("embed.json", b"", "embed.json is damaged"),
    ("embed.json", b"{not json", "embed.json is damaged"),
    ("embed.json", json.dumps({"model": "m1"}).encode(), "embed.json lacks train_run, checkpoint"),
    ("index.csv", b"id,landmark_id,split,path\ngarbage\n", "index.csv is damaged (line 2: 'garbage')"),
])
def test_damaged_artifacts_are_named_even_without_a_manifest(whitened, tmp_path, name, content, expected):
    assert expected in refusal(damaged(whitened, tmp_path, name, content, manifest=False))


@pytest.mark.parametrize("name", ["embeddings.npy", "index.csv", "embed.json", "transform.npz"])
def test_the_manifest_catches_truncated_and_changed_artifacts(whitened, tmp_path, name):
    data = (whitened / name).read_bytes()
    message = refusal(damaged(whitened, tmp_path, name, data[:-7]))
    assert f"{name} is truncated or was changed ({len(data) - 7} bytes; {len(data)} when its run wrote it)" in message
    same_size = data[:-1] + bytes([data[-1] ^ 1])
    assert f"{name} was changed after its run wrote it" in refusal(damaged(whitened, tmp_path / "b", name, same_size))


def test_truncated_embeddings_are_named(whitened, tmp_path):
    data = (whitened / "embeddings.npy").read_bytes()
    half = damaged(whitened, tmp_path, "embeddings.npy", data[: len(data) // 2], manifest=False)
    assert "embeddings.npy is damaged" in refusal(half)
    text = damaged(whitened, tmp_path / "b", "embeddings.npy", b"this is not an array", manifest=False)
    assert "embeddings.npy is damaged" in refusal(text)
    assert np.load(whitened / "embeddings.npy").shape[1] == 16
