from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import EvaluateConfig


def run(cfg: DictConfig, run_dir: Path) -> Any:
    """The stage, imported after validation: a bad value is reported before its imports (torch)."""
    from landmark_ae.retrieval.evaluate import run_evaluate

    return run_evaluate(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def _main(cfg: DictConfig) -> None:
    execute("evaluate", cfg, EvaluateConfig, run)


def main() -> None:
    launch("evaluate", _main)
