import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import ServeConfig
from landmark_ae.errors import UserError
from landmark_ae.serve import TOKEN_ENV

TOKEN_KEYS = ("token", "+token", "++token")


def token_out_of_argv(argv: list[str]) -> list[str]:
    """argv without its `token=...` (put in LANDMARK_AE_TOKEN for this process instead): Hydra would store
    it in the run's .hydra/ record (config.yaml, hydra.yaml, overrides.yaml), print it with --cfg job and
    echo it in its errors."""
    kept = []
    for arg in argv:
        key, equals, value = arg.partition("=")
        if equals and key in TOKEN_KEYS:
            os.environ[TOKEN_ENV] = value  # ServeConfig's token falls back to it; empty: no token
        else:
            kept.append(arg)
    return kept


def check_settings(cfg: DictConfig) -> None:
    """What the schema's ranges cannot say: the keys that must agree with each other."""
    if cfg.k > cfg.max_k:
        raise UserError(f"k={cfg.k} (the default a request gets) is above max_k={cfg.max_k}: lower k or raise max_k")
    if cfg.max_inflight_mb < cfg.max_body_mb:
        raise UserError(f"max_inflight_mb={cfg.max_inflight_mb:g} is below max_body_mb={cfg.max_body_mb:g}, so a body "
                        "of the largest size allowed could never be taken: raise max_inflight_mb or lower max_body_mb")


def run(cfg: DictConfig, run_dir: Path) -> Any:
    """The stage, imported after validation: a bad value is reported before its imports (torch)."""
    check_settings(cfg)
    from landmark_ae.serve.server import run_serve

    return run_serve(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="serve")
def _main(cfg: DictConfig) -> None:
    execute("serve", cfg, ServeConfig, run)


def main() -> None:
    sys.argv = [sys.argv[0], *token_out_of_argv(sys.argv[1:])]
    launch("serve", _main)
