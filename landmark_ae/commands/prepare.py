import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import PrepareConfig


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prepare")
def _main(cfg: DictConfig) -> None:
    execute("prepare", cfg, PrepareConfig, "landmark_ae.data.prepare:run_prepare")


def main() -> None:
    launch("prepare", _main)
