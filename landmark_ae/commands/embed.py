"""`landmark-ae embed`: the effective embed settings are resolved here, once, and handed to the stage.

Settings a train run carries (its `eval_embed`: retrieval/embed_run.train_run_embed_settings) are
embed's defaults for that run; keys given on the command line win. Only this layer knows which keys
the command line gave (Hydra's task overrides); the stage takes the typed result.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from landmark_ae.commands import CONFIG_DIR, execute, launch
from landmark_ae.config import EmbedConfig, EmbedSettings, enum_value

log = logging.getLogger(__name__)


def command_line_keys() -> set[str] | None:
    """The keys set on this command line (Hydra's task overrides); None outside a Hydra job (a
    config composed in code, as the tests' run_in_process: every key counts as given)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}


def effective_settings(cfg: DictConfig, carried: dict[str, Any], given: set[str] | None) -> tuple[EmbedSettings, dict]:
    """The EmbedSettings this run embeds with: cfg's value for each key given on the command line
    (`given`; None: every key), the train run's `carried` value for the others it carries, cfg's
    default for the rest. Also the carried values that changed one (embed.json's settings_from_train_run)."""
    taken = {} if given is None else {k: v for k, v in carried.items() if k not in given}
    changed = {k: v for k, v in taken.items() if enum_value(cfg[k]) != v}
    values = {f.name: cfg[f.name] for f in dataclasses.fields(EmbedSettings)} | taken
    settings = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EmbedSettings), values))
    return settings, changed  # type: ignore[return-value]


def check_reranking(settings: EmbedSettings, from_train_run: dict[str, Any], train_run: Path) -> None:
    """config's rule (DBA, αQE and diffusion need l2) on the effective settings; when the train run turned them
    on, the message says so and how to turn them off."""
    from landmark_ae.config_checks import check_reranking as rule

    inherited = [k for k in ("dba_k", "qe_k", "diffusion_k") if k in from_train_run]
    hint = (f" ({' and '.join(inherited)} from train run {train_run}'s eval_embed: pass "
            f"{' '.join(k + '=0' for k in inherited)} to turn them off)") if inherited else ""
    rule(settings, hint=hint)


def _plain(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def run(cfg: DictConfig, run_dir: Path) -> Any:
    """The stage, imported after validation: a bad value is reported before its imports (torch)."""
    from landmark_ae.retrieval.embed import resolve_inputs, run_embed
    from landmark_ae.retrieval.embed_run import train_run_embed_settings

    inputs = resolve_inputs(cfg, run_dir)
    given = command_line_keys()
    carried = train_run_embed_settings(inputs.train_run) if given is not None else {}
    settings, from_train_run = effective_settings(cfg, carried, given)
    if from_train_run:
        log.info("settings from train run %s (its eval_embed; keys given here win): %s", inputs.train_run,
                 " ".join(f"{k}={_plain(v)}" for k, v in from_train_run.items()))
    check_reranking(settings, from_train_run, inputs.train_run)
    return run_embed(cfg, run_dir, inputs, settings, from_train_run)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="embed")
def _main(cfg: DictConfig) -> None:
    execute("embed", cfg, EmbedConfig, run)


def main() -> None:
    launch("embed", _main)
