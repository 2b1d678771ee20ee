from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import ServeConfig


def run(cfg: DictConfig, run_dir: Path) -> Any:
    """The stage, imported after validation: a bad value is reported before its imports (torch)."""
    from landmark_ae.serve.server import run_serve

    return run_serve(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="serve")
def _main(cfg: DictConfig) -> None:
    execute("serve", cfg, ServeConfig, run)


def main() -> None:
    launch("serve", _main)
