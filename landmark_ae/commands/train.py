from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from landmark_ae.commands import CONFIG_DIR, execute, fail, launch, secondary_rank
from landmark_ae.config import TrainConfig
from landmark_ae.errors import UserError

OBJECTIVE = "eval.map@100"  # what a sweep job returns with evaluate=true (hydra/sweeper=optuna maximises it)


def train_and_evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train; with evaluate=true, then embed and evaluate this run (landmark_ae/chain.py)."""
    from landmark_ae.chain import evaluate_train_run

    # eval_embed's own rule (dba_k/qe_k need l2) is checked by validate() before this runs (config_checks).
    if not cfg.evaluate and _optuna_sweep():
        raise UserError("hydra/sweeper=optuna needs evaluate=true: each trial returns its val mAP@100")
    from landmark_ae.train.loop import run_train

    results = run_train(cfg, run_dir)
    if cfg.evaluate and not secondary_rank():  # under torchrun, rank 0 alone embeds and evaluates
        results.update(evaluate_train_run(cfg, run_dir))
    return results


def _optuna_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return "optuna" in str((HydraConfig.get().get("sweeper") or {}).get("_target_", "")).lower()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    results = execute("train", cfg, TrainConfig, train_and_evaluate)
    # A sweeper that optimises (hydra/sweeper=optuna) reads the job's return value.
    return float(results[OBJECTIVE]) if results and OBJECTIVE in results else None


def refuse_unresumable(argv: list[str]) -> None:
    """`resume=<dir>` of a train run that cannot continue as it began (train/resumable.py), refused
    before Hydra writes its record into the run dir. The checks every resume makes come first."""
    given = next((a.split("=", 1)[1] for a in argv if a.lstrip("+~").split("=", 1)[0] == "resume" and "=" in a), None)
    if not given or given == "null":
        return
    from landmark_ae.common import world_size
    from landmark_ae.runs import check_resumable
    from landmark_ae.train.resumable import check_train_resume

    check_train_resume(check_resumable(given, "train"), world_size())


def main() -> None:
    try:
        refuse_unresumable(sys.argv[1:])
    except UserError as exc:
        fail("train", str(exc))
    launch("train", _main)
