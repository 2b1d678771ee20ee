"""`landmark-ae report run=<evaluate run | train run | sweep dir>`: write <run>/report.html (landmark_ae/report.py)."""

from dataclasses import dataclass, field
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from landmark_ae.commands import CONFIG_DIR, execute_in_temp_dir, launch
from landmark_ae.config import PathsConfig


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
    execute_in_temp_dir("report", cfg, ReportConfig, run)  # it writes only <run>/report.html


def main() -> None:
    launch("report", _main)
