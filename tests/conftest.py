"""Shared helpers and fixtures, one per need.

Helpers (import them with `from conftest import ...`):
    run_cli / results / one_line_error   the real `landmark-ae` CLI in a subprocess and its output
    modules_loaded_by                    what importing a module pulls in (torch, sklearn, ...)
    compose / run_in_process             a command's config composed in-process (Hydra's compose API, once
                                         per session), and a command's body run on it without the CLI around it
    execute_in_process                   the command layer (execute) around any body, in-process
    model_config                         a model YAML from conf/model as a plain dict
    jpeg / hexid / outcome               small JPEGs, GLDv2-style ids, what a prepare run made of each id

Session fixtures (built once through the real CLI, and once for all of xdist's workers: built_once):
tiny_source -> tiny_prepared -> tiny_trained -> tiny_embedded, the end-to-end pipeline every retrieval
test builds on; tiny_contrastive (M5).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LANDMARK_AE_SHARED_DATA", REPO.parent / "shared" / "data"))
# embed writes encoder.onnx only where a test asks (onnx=true, tests/test_onnx.py): the export costs seconds.
os.environ.setdefault("LANDMARK_AE_ONNX", "false")
# A shell's background job (`make test &`, `nohup ... &`) starts with SIGINT ignored, and every process
# a test starts would inherit that: the tests of Ctrl-C need it delivered. A handler (unlike SIG_IGN)
# is reset to the default on exec, so the CLI subprocesses get Python's KeyboardInterrupt again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ---- the CLI in a subprocess ----------------------------------------------------------------


def run_cli(*args: str, outputs: Path, cwd: Path | None = None, timeout: float = 300,
            env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run `landmark-ae <args>` in a subprocess with runs going to `outputs` (and `stdin` as its input)."""
    full_env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs), "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "landmark_ae", *args], capture_output=True, text=True,
        cwd=cwd or REPO, env=full_env, timeout=timeout, input=stdin,
    )


def results(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """The `key<TAB>value` lines a command prints on stdout."""
    return dict(line.split("\t", 1) for line in proc.stdout.splitlines() if "\t" in line)


def one_line_error(proc: subprocess.CompletedProcess, *expected: str) -> str:
    """The CLI's promise for an expected failure: exit 2, one short message on stderr, no traceback,
    nothing on stdout. Returns stderr."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    assert proc.stdout == "", proc.stdout
    for text in expected:
        assert text in proc.stderr, proc.stderr
    return proc.stderr


def modules_loaded_by(module: str, candidates: tuple[str, ...] = ("torch", "sklearn", "pandas")) -> set[str]:
    """Which of `candidates` a fresh interpreter has imported after `import module` (import cost)."""
    code = f"import sys, {module}; print(','.join(m for m in {candidates!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return set(filter(None, out.stdout.strip().split(",")))


# ---- commands in-process -------------------------------------------------------------------


_COMPOSED: dict[tuple, Any] = {}  # (command, overrides, with hydra) -> config, composed once per session


def compose(command: str, *overrides: str, hydra: bool = False):
    """`command`'s config with `overrides`, composed as the CLI composes it (schemas and resolvers
    registered by importing landmark_ae.commands); raises what Hydra raises on a bad override.
    hydra=True: with Hydra's own `hydra` node (its runtime choices and overrides).

    Each distinct composition happens once per session; callers get a copy (they may change it).
    Interpolations stay unresolved in the cached config, so `${oc.env:...}` is read when used."""
    import copy

    key = (command, overrides, hydra)
    if key not in _COMPOSED:
        from hydra import compose as hydra_compose
        from hydra import initialize_config_dir

        import landmark_ae.commands  # noqa: F401  (registers the schemas and the resolvers the configs use)
        from landmark_ae.config import config_dir

        with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
            _COMPOSED[key] = hydra_compose(config_name=command, overrides=list(overrides), return_hydra_config=hydra)
    return copy.deepcopy(_COMPOSED[key])


def execute_in_process(command: str, body: Any, *overrides: str, run_dir: Path) -> Any:
    """landmark_ae.commands.execute(command, cfg, schema, body) on `command`'s config, as a @hydra.main
    job would call it with Hydra's run dir `run_dir` (validation, the lock, resume checks, how a run
    that does not complete is left, what reaches stdout and stderr). Hydra's job state and the SIGTERM
    handler are restored afterwards."""
    import copy
    import signal

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    from landmark_ae.commands import execute

    cfg = compose(command, *overrides, hydra=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # as Hydra makes it before the job starts
    sigterm = signal.getsignal(signal.SIGTERM)
    HydraConfig.instance().set_config(cfg)
    try:
        job_cfg = copy.deepcopy(cfg)  # what Hydra's run_job hands the task: the config without `hydra`
        with read_write(job_cfg), open_dict(job_cfg):
            del job_cfg["hydra"]
        return execute(command, job_cfg, schema_of(command), body)
    finally:
        HydraConfig.instance().cfg = None
        signal.signal(signal.SIGTERM, sigterm)


def schema_of(command: str) -> type:
    from landmark_ae import config

    return {"prepare": config.PrepareConfig, "train": config.TrainConfig, "embed": config.EmbedConfig,
            "evaluate": config.EvaluateConfig, "query": config.QueryConfig, "runs": config.RunsConfig}[command]


def run_in_process(command: str, *overrides: str, run_dir: Path) -> Any:
    """compose + validate + the command's body on run_dir, as `execute` runs it minus the CLI's
    bookkeeping (Hydra's run dir and .hydra/, the lock, resume checks, error printing).
    Expected failures surface as landmark_ae.errors.UserError. Unless `paths.output_dir=` is given,
    runs are looked up in <run_dir's parent>/outputs, never in the repo's outputs/."""
    from landmark_ae.commands import embed, evaluate, prepare, query
    from landmark_ae.config import validate
    from landmark_ae.train.loop import run_train

    bodies = {"prepare": prepare.run, "train": run_train, "embed": embed.run, "evaluate": evaluate.run,
              "query": query.run}
    if not any(o.startswith("paths.output_dir=") for o in overrides):
        overrides = (f"paths.output_dir={run_dir.parent / 'outputs'}", *overrides)
    cfg = compose(command, *overrides)
    validate(cfg, schema_of(command))
    run_dir.mkdir(parents=True, exist_ok=True)
    return bodies[command](cfg, run_dir)


def batches(x: Any):
    """A (N, 3, H, W) uint8 tensor as the training loop's streamed batches (ImageBatches, no resize)."""
    from landmark_ae.data.prepared import ImageBatches

    return ImageBatches(x.permute(0, 2, 3, 1).contiguous().numpy(), x.shape[-1])


def step_of(model, objective=None):
    """A model and its objective as train_one_epoch's step module (one process)."""
    from landmark_ae.train.objectives import ONE
    from landmark_ae.train.step import ObjectiveModule

    return ObjectiveModule(model, objective, ONE)


def model_config(name: str) -> dict:
    """conf/model/<name>.yaml as the plain dict build_model takes."""
    from landmark_ae.config import model_yaml

    return model_yaml(name)


# ---- prepare inputs and outcomes (http, tar, local) ----------------------------------------


def jpeg(seed: int, size: tuple[int, int] = (200, 150)) -> bytes:
    """A small smooth JPEG, different per seed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def hexid(i: int) -> str:
    """A valid GLDv2 image id (16 lowercase hex digits), distinct per i."""
    return f"{0xa1b2c3d4e5f60000 + i:016x}"


def outcome(run_dir: Path) -> dict[str, str | None]:
    """id -> failure reason, or None for an id prepared into a split (ids rejected before fetching
    are left out); an id both prepared and failed fails the test."""
    import pandas as pd

    failures = pd.read_csv(run_dir / "failures.csv", dtype={"id": str}, keep_default_na=False)
    failures = failures[~failures["reason"].isin(["invalid_id", "duplicate_id"])]
    got: dict[str, str | None] = dict(zip(failures["id"], failures["reason"], strict=True))
    for split in ("train", "val", "test"):
        for image_id in pd.read_csv(run_dir / f"{split}.csv", dtype={"id": str})["id"]:
            assert image_id not in got, f"{image_id} both prepared and failed"
            got[image_id] = None
    return got


# ---- the order of the test files (make test: xdist's loadfile, --no-loadscope-reorder) -------------

# The session fixtures whose first use builds the pipeline through the CLI (about 15 s on 2 cores).
PIPELINE = frozenset({"tiny_prepared", "tiny_prepare_cli", "tiny_trained", "tiny_train_cli", "tiny_embedded",
                      "tiny_contrastive"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Test files in turns, one that uses the shared pipeline and one that does not, each kind
    largest first: while one worker builds the pipeline (built_once), the other runs tests that need
    none instead of waiting on the lock (it waited 13 s), and small files left for last even out the end."""
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    needs = {name: any(PIPELINE & set(getattr(i, "fixturenames", ())) for i in its) for name, its in files.items()}
    by_size = sorted(files, key=lambda name: -len(files[name]))
    pipeline = [name for name in by_size if needs[name]]
    other = [name for name in by_size if not needs[name]]
    order = [name for pair in zip_longest(pipeline, other) for name in pair if name is not None]
    items[:] = [item for name in order for item in files[name]]


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "outputs"
    monkeypatch.setenv("LANDMARK_AE_OUTPUTS", str(out))
    return out


def built_once(factory: pytest.TempPathFactory, name: str, build: Any) -> Any:
    """build(dir) for the whole session, once across pytest-xdist's workers: the first worker to ask
    builds in a directory they all share (under a file lock), the others read what it recorded.
    `build` returns a Path or a CompletedProcess (kept as JSON); a failed build is not recorded,
    so each worker that needs it fails with its own error."""
    from filelock import FileLock

    base = factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: one basetemp per worker
    root, record = shared / f"shared-{name}", shared / f"shared-{name}.json"
    with FileLock(str(shared / f"shared-{name}.lock")):
        if not record.is_file():
            if root.exists():  # a build that failed: start it again
                import shutil

                shutil.rmtree(root)
            root.mkdir()
            made = build(root)
            kept = ({"path": str(made)} if isinstance(made, Path) else
                    {"args": made.args, "returncode": made.returncode, "stdout": made.stdout, "stderr": made.stderr})
            record.write_text(json.dumps(kept))
    kept = json.loads(record.read_text())
    return Path(kept["path"]) if "path" in kept else subprocess.CompletedProcess(**kept)


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GLDv2-layout source (train.csv + images/a/b/c/<id>.jpg): 6 landmarks, 120 images."""
    from landmark_ae.data.sources.synthetic import SyntheticSpec, generate

    def build(root: Path) -> Path:
        generate(root, SyntheticSpec(n_landmarks=6, n_images=120, min_per_landmark=4, seed=3))
        return root

    return built_once(tmp_path_factory, "tiny_source", build)


@pytest.fixture(scope="session")
def tiny_prepare_cli(tiny_source: Path, tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess:
    """`landmark-ae prepare` of tiny_source at 96x96 (the process, for its output)."""
    def build(out: Path) -> subprocess.CompletedProcess:
        proc = run_cli("prepare", "data=gldv2", f"data.root={tiny_source}", "progress=false", outputs=out)
        assert proc.returncode == 0, proc.stderr
        return proc

    return built_once(tmp_path_factory, "pipeline_outputs", build)


@pytest.fixture(scope="session")
def tiny_prepared(tiny_prepare_cli: subprocess.CompletedProcess) -> Path:
    """The prepare run dir of tiny_source (its parent's parent is the pipeline's outputs dir)."""
    return Path(results(tiny_prepare_cli)["run_dir"])


@pytest.fixture(scope="session")
def tiny_train_cli(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess:
    """`landmark-ae train` of M1 for 2 epochs with the default data_dir (the latest complete
    prepare run of data=gldv2 in the outputs dir, i.e. tiny_prepared)."""
    def build(_: Path) -> subprocess.CompletedProcess:
        proc = run_cli("train", "data=gldv2", "model=m1", "epochs=2", "batch_size=32", "progress=false",
                       outputs=tiny_prepared.parent.parent)
        assert proc.returncode == 0, proc.stderr
        return proc

    return built_once(tmp_path_factory, "tiny_train", build)


@pytest.fixture(scope="session")
def tiny_trained(tiny_train_cli: subprocess.CompletedProcess) -> Path:
    """The train run dir of M1 on tiny_prepared."""
    return Path(results(tiny_train_cli)["run_dir"])


@pytest.fixture(scope="session")
def tiny_embedded(tiny_trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Embeddings of tiny_prepared by tiny_trained (`landmark-ae embed`); returns the embed run dir."""
    def build(_: Path) -> Path:
        proc = run_cli("embed", f"train_run={tiny_trained}", "progress=false", outputs=tiny_trained.parent.parent)
        assert proc.returncode == 0, proc.stderr
        return Path(results(proc)["run_dir"])

    return built_once(tmp_path_factory, "tiny_embed", build)


@pytest.fixture(scope="session")
def tiny_contrastive(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """M5 trained 1 epoch with `experiment=contrastive` on tiny_prepared (in-process); the train run dir."""
    def build(root: Path) -> Path:
        run_in_process("train", "data=gldv2", f"data_dir={tiny_prepared}", "experiment=contrastive", "epochs=1",
                       "batch_size=32", "progress=false", run_dir=root / "train")
        return root / "train"

    return built_once(tmp_path_factory, "contrastive", build)
