import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute
from landmark_ae.config import QueryConfig


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="query")
def main(cfg: DictConfig) -> None:
    from landmark_ae.query import run_query

    execute("query", cfg, QueryConfig, run_query)
