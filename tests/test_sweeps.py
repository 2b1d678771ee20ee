"""Hydra multirun sweeps through the CLI (`landmark-ae train -m ...`): one run dir per job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow


def test_multirun_sweep_trains_each_model_in_its_own_dir(tiny_prepared, tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli("train", "-m", "data=gldv2", f"data_dir={tiny_prepared}", "model=m1,m2", "epochs=1",
                   "progress=false", outputs=out)
    assert proc.returncode == 0, proc.stderr
    blocks = [line.split("\t")[1] for line in proc.stdout.splitlines() if line.startswith(("run_dir\t", "model\t"))]
    dirs, models = [Path(d) for d in blocks[0::2]], blocks[1::2]
    assert len(dirs) == 2 and dirs[0].parent == dirs[1].parent and {d.name for d in dirs} == {"0", "1"}
    assert sorted(models) == ["m1", "m2"]
    for d in dirs:
        assert (d / "best.pt").is_file() and len(pd.read_csv(d / "history.csv")) == 1
