import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import QueryConfig


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="query")
def _main(cfg: DictConfig) -> None:
    execute("query", cfg, QueryConfig, "landmark_ae.retrieval.query:run_query")


def main() -> None:
    launch("query", _main)
