"""scripts/quality.py protocol=unseen end to end on the tiny source: train on the lower landmarks,
embed the others with `embed data_dir=`, evaluate every image against all the others (queries=all);
and how it reuses train runs (reuse=)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

EXPERIMENT = """
epochs: 1
seeds: [0]
default_seed: 0
rows: []
unseen:
  split: 1003
  seeds: [0]
  reference: M1
  rows:
    - name: M1
      train: [model=m1, batch_size=16]
    - name: M1 +L2 +DBA +aQE
      train: [model=m1, batch_size=16]
      embed: [l2=true, dba_k=2, qe_k=2]
"""


@pytest.mark.slow
def test_unseen_protocol_end_to_end(tiny_source, tmp_path):
    outputs = tmp_path / "outputs"
    (tmp_path / "quality.yaml").write_text(EXPERIMENT)
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs)}
    proc = subprocess.run([sys.executable, "scripts/quality.py", "protocol=unseen", "data=gldv2",
                           f"data.root={tiny_source}", f"experiment={tmp_path / 'quality.yaml'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line.split("\t", 1) for line in proc.stdout.splitlines()]
    assert lines[0][0] == "run_dir"
    table = pd.read_csv(Path(lines[0][1]) / "quality_unseen.csv")
    assert table["row"].tolist() == ["M1", "M1 +L2 +DBA +aQE", "raw pixels 11x11"]
    assert table["train_run"].iloc[0] == table["train_run"].iloc[1]  # the same training, two post-processings
    # trained on landmarks 1000-1002 only; embedded and scored on 1003-1005, every image against the others
    trained = json.loads((Path(table["train_run"].iloc[0]) / "run.json").read_text())
    seen = pd.read_csv(Path(trained["data_dir"]) / "train.csv")
    assert set(seen["landmark_id"]) == {1000, 1001, 1002}
    for embed_run in table["embed_run"].iloc[:2]:
        meta = json.loads((Path(embed_run) / "embed.json").read_text())
        assert meta["data_dir"] != trained["data_dir"]
        assert set(pd.read_csv(Path(embed_run) / "index.csv")["landmark_id"]) == {1003, 1004, 1005}
    evaluations = [json.loads(p.read_text()) for p in outputs.glob("evaluate/*/metrics.json")]
    assert len(evaluations) == 2 and {e["settings"]["queries"] for e in evaluations} == {"all"}
    assert {e["postprocess"]["qe_k"] for e in evaluations} == {0, 2}
    n = sum(e["counts"][s] for e in evaluations[:1] for s in ("train", "val", "test"))
    assert all(e["results"]["m1"]["n_queries"] == n for e in evaluations)
    md = (Path(lines[0][1]) / "quality_unseen.md").read_text()
    assert "| M1 | 392 | 1 |" in md and "1.00 |" in md  # the reference row is 1.00x itself


SEED_EXPERIMENT = """
epochs: 1
seeds: [0]
default_seed: 0
pixel_pca: 8
rows:
  - name: M1
    train: [model=m1, batch_size=16]
    headline: true
  - name: M1 +L2
    train: [model=m1, batch_size=16]
    embed: [l2=true]
"""


@pytest.mark.slow
def test_seed_protocol_end_to_end(tiny_prepared, tmp_path):
    outputs = tmp_path / "outputs"
    (tmp_path / "quality.yaml").write_text(SEED_EXPERIMENT)
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs)}
    proc = subprocess.run([sys.executable, "scripts/quality.py", "data=gldv2", f"data_dir={tiny_prepared}",
                           f"experiment={tmp_path / 'quality.yaml'}", "queries=val"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line.split("\t", 1) for line in proc.stdout.splitlines()]
    assert lines[0][0] == "run_dir"
    printed = dict(lines[1:])
    table = pd.read_csv(Path(lines[0][1]) / "quality.csv")
    assert table["row"].tolist() == ["M1", "M1 +L2", "PCA-8 of pixels (+L2)"]
    assert table["train_run"].iloc[0] == table["train_run"].iloc[1]  # one training, two post-processings
    trained = json.loads((Path(table["train_run"].iloc[0]) / "run.json").read_text())
    assert table["best_val_loss"].iloc[0] == pytest.approx(trained["best_val_loss"], abs=1e-6)  # read from run.json
    assert float(printed["M1.map@100"]) == pytest.approx(table["map@100"].iloc[0], abs=1e-6)
    evaluations = [json.loads(p.read_text()) for p in outputs.glob("evaluate/*/metrics.json")]
    assert len(evaluations) == 2 and {e["settings"]["queries"] for e in evaluations} == {"val"}
    assert "| M1 | 392 | 1 | 1 |" in (Path(lines[0][1]) / "quality.md").read_text()


def load_quality_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quality_script", REPO / "scripts" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_reused_run_is_embedded_with_its_presets_eval_embed_of_now(tmp_path):
    # A train run made by experiment=retrieval before its embed settings changed: reuse finds it (the
    # training is the same) and says which embed overrides bring it to the preset's settings of now.
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import landmark_ae.commands  # noqa: F401 - registers the schemas
    from landmark_ae.config import config_dir

    quality = load_quality_script()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = compose("train", overrides=["experiment=retrieval", "epochs=24", "seed=1"])
    now = OmegaConf.to_container(cfg.eval_embed, enum_to_str=True)
    run = tmp_path / "train" / "run"
    (run / ".hydra").mkdir(parents=True)
    cfg.eval_embed.input_size = None
    cfg.eval_embed.whiten_shrinkage = 0.5
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    (run / "best.pt").write_bytes(b"")
    (run / "run.json").write_text(json.dumps({"status": "complete", "data_dir": str(tmp_path)}))
    found = quality.find_reusable([tmp_path / "train"], ["experiment=retrieval"], 1, "24", str(tmp_path))
    assert found == (run, [f"input_size={now['input_size']}", f"whiten_shrinkage={now['whiten_shrinkage']}"])
    assert quality.find_reusable([tmp_path / "train"], ["experiment=retrieval"], 2, "24", str(tmp_path)) is None
    # experiment=contrastive trains at another temperature: not the same training, not reused.
    assert quality.find_reusable([tmp_path / "train"], ["experiment=contrastive"], 1, "24", str(tmp_path)) is None
