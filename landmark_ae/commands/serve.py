import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import ServeConfig


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="serve")
def _main(cfg: DictConfig) -> None:
    execute("serve", cfg, ServeConfig, "landmark_ae.serve.server:run_serve")


def main() -> None:
    launch("serve", _main)
