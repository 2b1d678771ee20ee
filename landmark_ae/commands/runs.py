from typing import Any

import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import RunsConfig
from landmark_ae.runs import remove_run_dir


def run(cfg: DictConfig, run_dir: Any) -> None:
    from landmark_ae.run_list import run_runs

    return run_runs(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="runs")
def _main(cfg: DictConfig) -> None:
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    # `runs` only reads: Hydra's run dir for it is a temp dir (conf/runs.yaml), removed here,
    # whatever happens, so listing runs never adds one.
    own_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        execute("runs", cfg, RunsConfig, run)
    finally:
        import logging

        logging.shutdown()  # closes runs.log, the job log's file handler, before its dir goes
        remove_run_dir(own_dir)


def main() -> None:
    launch("runs", _main)
