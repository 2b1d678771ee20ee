"""`landmark-ae report run=<evaluate run | train run | sweep dir>`: write <run>/report.html (landmark_ae/report.py)."""

from dataclasses import dataclass, field
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import PathsConfig
from landmark_ae.runs import remove_run_dir


@dataclass
class ReportConfig:
    """`landmark-ae report`: one HTML file of a run's results, written into that run's dir."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    run: str = MISSING  # an evaluate run, a train run or a multirun sweep dir


ConfigStore.instance().store(name="report_schema", node=ReportConfig)


def run(cfg: DictConfig, run_dir: Any) -> dict[str, Any]:
    from landmark_ae.report import write_report

    return {"report": write_report(cfg.run)}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="report")
def _main(cfg: DictConfig) -> None:
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    # report writes only into the run it reports on: Hydra's own run dir for it is a temp dir
    # (conf/report.yaml), removed here whatever happens, as `runs` does.
    own_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        execute("report", cfg, ReportConfig, run)
    finally:
        import logging

        logging.shutdown()
        remove_run_dir(own_dir)


def main() -> None:
    launch("report", _main)
