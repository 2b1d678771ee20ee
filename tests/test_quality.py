"""scripts/quality.py protocol=unseen end to end on the tiny source: train on the lower landmarks,
embed the others with `embed data_dir=`, evaluate every image against all the others (queries=all)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

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
