"""Slower end-to-end runs (`make test-all`): a Hydra multirun sweep and the Table 1 script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def test_multirun_sweep_trains_each_model_in_its_own_dir(tiny_prepared, tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli("train", "-m", "data=gldv2", f"data_dir={tiny_prepared}", "model=m1,m2", "epochs=1",
                   "progress=false", outputs=out)
    assert proc.returncode == 0, proc.stderr
    dirs = [Path(line.split("\t")[1]) for line in proc.stdout.splitlines() if line.startswith("run_dir\t")]
    assert len(dirs) == 2 and dirs[0].parent == dirs[1].parent and {d.name for d in dirs} == {"0", "1"}
    assert all((d / "best.pt").is_file() for d in dirs)


def test_table1_script_end_to_end(tiny_prepared, tmp_path):
    env = {**os.environ, "LANDMARK_AE_OUTPUTS": str(tmp_path / "outputs")}
    proc = subprocess.run([sys.executable, "scripts/table1.py", "data=gldv2", f"data_dir={tiny_prepared}", "epochs=1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.splitlines()[0].split("\t")[1])
    table = pd.read_csv(run_dir / "table1.csv")
    assert list(table.columns) == ["metric", "m1", "m2", "m3", "pixels_23x23", "seed_m1", "seed_m2", "seed_m3"]
    assert table.set_index("metric").loc["nmi", "seed_m2"] == pytest.approx(0.182436)
    assert "| NMI |" in (run_dir / "table1.md").read_text()
