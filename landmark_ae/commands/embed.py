import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import EmbedConfig


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="embed")
def _main(cfg: DictConfig) -> None:
    execute("embed", cfg, EmbedConfig, "landmark_ae.retrieval.embed:run_embed")


def main() -> None:
    launch("embed", _main)
