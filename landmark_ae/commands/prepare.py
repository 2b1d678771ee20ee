from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import PrepareConfig


def run(cfg: DictConfig, run_dir: Path) -> Any:
    """The stage, imported after validation: a bad value is reported before its imports (torch)."""
    from landmark_ae.data.prepare import run_prepare

    return run_prepare(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prepare")
def _main(cfg: DictConfig) -> None:
    execute("prepare", cfg, PrepareConfig, run)


def main() -> None:
    launch("prepare", _main)
