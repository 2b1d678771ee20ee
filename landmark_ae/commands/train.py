import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import TrainConfig


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _main(cfg: DictConfig) -> None:
    execute("train", cfg, TrainConfig, "landmark_ae.train.loop:run_train")


def main() -> None:
    launch("train", _main)
