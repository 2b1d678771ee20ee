"""`landmark-ae export embed_run=<run> [out=<dir>] [format=parquet|npy]`: a bundle (retrieval/bundle.py)."""

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import ExportConfig


def run(cfg: DictConfig, run_dir: Path) -> Any:
    """The stage, imported after validation: a bad value is reported before its imports."""
    from landmark_ae.retrieval.bundle import run_export

    return run_export(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def _main(cfg: DictConfig) -> None:
    execute("export", cfg, ExportConfig, run)


def main() -> None:
    launch("export", _main)
