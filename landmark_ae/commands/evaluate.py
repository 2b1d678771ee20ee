import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import EvaluateConfig


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def _main(cfg: DictConfig) -> None:
    execute("evaluate", cfg, EvaluateConfig, "landmark_ae.retrieval.evaluate:run_evaluate")


def main() -> None:
    launch("evaluate", _main)
