"""Shared fixtures: small seeded data made on the spot, and a helper to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LANDMARK_AE_SHARED_DATA", REPO.parent / "shared" / "data"))


def run_cli(*args: str, outputs: Path, cwd: Path | None = None, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `landmark-ae <args>` in a subprocess with runs going to `outputs`."""
    full_env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs), "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "landmark_ae", *args], capture_output=True, text=True,
        cwd=cwd or REPO, env=full_env, timeout=timeout,
    )


def results(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """The `key<TAB>value` lines a command prints on stdout."""
    return dict(line.split("\t", 1) for line in proc.stdout.splitlines() if "\t" in line)


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "outputs"
    monkeypatch.setenv("LANDMARK_AE_OUTPUTS", str(out))
    return out


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GLDv2-layout source (train.csv + images/a/b/c/<id>.jpg): 6 landmarks, 120 images."""
    from landmark_ae.data.sources.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("tiny_source")
    generate(root, SyntheticSpec(n_landmarks=6, n_images=120, min_per_landmark=4, seed=3))
    return root


@pytest.fixture(scope="session")
def tiny_prepared(tiny_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_source prepared at 96x96 through the real CLI; returns the prepare run dir."""
    out = tmp_path_factory.mktemp("prepared_outputs")
    proc = run_cli("prepare", "data=gldv2", f"data.root={tiny_source}", "progress=false", outputs=out)
    assert proc.returncode == 0, proc.stderr
    return Path(results(proc)["run_dir"])


@pytest.fixture(scope="session")
def tiny_trained(tiny_prepared: Path) -> Path:
    """M1 trained 2 epochs on tiny_prepared; returns the train run dir."""
    proc = run_cli("train", "data=gldv2", f"data_dir={tiny_prepared}", "model=m1", "epochs=2", "batch_size=32",
                   "progress=false", outputs=tiny_prepared.parent.parent)
    assert proc.returncode == 0, proc.stderr
    return Path(results(proc)["run_dir"])


@pytest.fixture(scope="session")
def tiny_embedded(tiny_trained: Path) -> Path:
    """Embeddings of tiny_prepared by tiny_trained; returns the embed run dir."""
    proc = run_cli("embed", f"train_run={tiny_trained}", "progress=false", outputs=tiny_trained.parent.parent)
    assert proc.returncode == 0, proc.stderr
    return Path(results(proc)["run_dir"])
