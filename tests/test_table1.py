"""scripts/table1.py end to end (prepare reused, train M1-M3 as one multirun, embed, evaluate): the
table's model columns are the metrics its own evaluate runs wrote, in valid ranges, in both files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

MODELS = ["m1", "m2", "m3"]
LABELS = {"best_val_loss": "Best validation loss", "nmi": "NMI", "ri": "RI", "ari": "ARI", "ami": "AMI",
          "map@100": "mAP@100", "p@1": "P@1", "p@10": "P@10", "recall@100": "recall@100"}


def test_table1_script_end_to_end(tiny_prepared, tmp_path):
    outputs = tmp_path / "outputs"
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs)}
    proc = subprocess.run([sys.executable, "scripts/table1.py", "data=gldv2", f"data_dir={tiny_prepared}", "epochs=1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line.split("\t", 1) for line in proc.stdout.splitlines()]
    assert lines[0][0] == "run_dir"
    run_dir = Path(lines[0][1])
    printed = dict(lines[1:])
    table = pd.read_csv(run_dir / "table1.csv").set_index("metric")
    assert list(table.index) == list(LABELS)
    pixels = [c for c in table.columns if c.startswith("pixels_")]
    assert list(table.columns) == [*MODELS, *pixels, *(f"seed_{m}" for m in MODELS)] and len(pixels) == 1

    # each model column is what that model's evaluate run wrote (and what the script printed)
    evaluations = [json.loads(p.read_text()) for p in outputs.glob("evaluate/*/metrics.json")]
    by_model = {e["model"]: e for e in evaluations}
    assert sorted(by_model) == MODELS and len(evaluations) == 3
    for m in MODELS:
        scores = by_model[m]["results"][m]
        for key in LABELS:
            if key == "best_val_loss":
                history = pd.read_csv(Path(by_model[m]["train_run"]) / "history.csv")
                expected = history["val_loss"].min()
                assert 0 < table.loc[key, m] < 1  # MSE of images in [-1, 1]
            else:
                expected = scores[key]
                lo = -1.0 if key in ("ari", "ami") else 0.0
                assert lo <= table.loc[key, m] <= 1.0, (m, key)
            assert table.loc[key, m] == pytest.approx(expected, abs=1e-6), (m, key)
            assert float(printed[f"{m}.{key}"]) == pytest.approx(expected, abs=1e-6), (m, key)
    # the baseline column is the pixel baseline of M2's evaluate run
    baseline = by_model["m2"]["results"][pixels[0]]
    for key in LABELS:
        if key != "best_val_loss":
            assert table.loc[key, pixels[0]] == pytest.approx(baseline[key], abs=1e-6), key

    # the Markdown table has one row per metric, the same numbers to 4 places
    md = (run_dir / "table1.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in md.splitlines() if line.startswith("| ") and not line.startswith("| metric")}
    assert list(rows) == list(LABELS.values())
    for key, label in LABELS.items():
        assert rows[label][:3] == [f"{table.loc[key, m]:.4f}" for m in MODELS], label
    for m in MODELS:
        assert by_model[m]["train_run"] in md  # the runs it was made from are named


def test_ctrl_c_of_table1_leaves_no_run_running_and_says_how_to_resume_in_one_line(tiny_prepared, tmp_path):
    outputs = tmp_path / "outputs"
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(outputs)}
    proc = subprocess.Popen([sys.executable, "scripts/table1.py", f"data_dir={tiny_prepared}", "epochs=500", "models=m1"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(outputs.glob("train/*/*/history.csv")) and time.monotonic() < deadline:
        time.sleep(0.2)  # an epoch done: there is work to keep
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the script and the train it runs
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr and stdout == "", stderr[-3000:]
    [job] = [p.parent for p in outputs.glob("train/*/*/run.json")]
    assert json.loads((job / "run.json").read_text())["status"] == "interrupted"
    assert stderr.strip().splitlines()[-1] == (
        f"table1: interrupted during `landmark-ae train -m`; its sweep {job.parent} keeps its finished work: "
        f"continue a job with `landmark-ae train resume={job.parent}/<job>`")
