from typing import Any

import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute_in_temp_dir, launch
from landmark_ae.config import RunsConfig


def run(cfg: DictConfig, run_dir: Any) -> None:
    from landmark_ae.run_list import run_runs

    return run_runs(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="runs")
def _main(cfg: DictConfig) -> None:
    execute_in_temp_dir("runs", cfg, RunsConfig, run)  # `runs` only reads: it adds no run dir


def main() -> None:
    launch("runs", _main)
