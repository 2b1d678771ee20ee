from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import QueryConfig


def run(cfg: DictConfig, run_dir: Path) -> Any:
    """The stage, imported after validation: a bad value is reported before its imports (torch)."""
    from landmark_ae.retrieval.query import run_query

    return run_query(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="query")
def _main(cfg: DictConfig) -> None:
    execute("query", cfg, QueryConfig, run)


def main() -> None:
    launch("query", _main)
