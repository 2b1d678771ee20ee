"""Checking a composed config against its schema (landmark_ae/config.py): unknown keys, the ranges and
choices declared in field metadata, and the rules across keys (CROSS_CHECKS), before a command does
any work. Also which keys a schema marks safe to change on `resume=`.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from landmark_ae.config import EmbedSettings, TrainConfig, enum_value
from landmark_ae.errors import UserError, unknown_key_message


def check_reranking(settings: Any, prefix: str = "", hint: str = "") -> None:
    """DBA, αQE and diffusion weigh neighbours by cosine similarity: dba_k/qe_k/diffusion_k > 0 need
    unit-length rows (l2=true). settings: EmbedSettings' keys (a config or the dataclass); prefix: where
    they sit (`eval_embed.`)."""
    if settings.diffusion_k and not settings.l2:
        raise UserError(f"{prefix}diffusion_k={settings.diffusion_k} needs {prefix}l2=true: it weighs neighbours by "
                        f"cosine similarity, of unit-length rows{hint}")
    if (settings.dba_k or settings.qe_k) and not settings.l2:
        raise UserError(f"{prefix}dba_k={settings.dba_k} {prefix}qe_k={settings.qe_k} need {prefix}l2=true: they weigh "
                        f"neighbours by cosine similarity, of unit-length rows{hint}")


def _check_train(cfg: Any, prefix: str = "") -> None:
    if cfg.evaluate:  # the evaluation embeds with eval_embed: refused now, not after training
        check_reranking(cfg.eval_embed, f"{prefix}eval_embed.")
    objective = cfg.get("objective")
    if objective is not None and enum_value(objective.name) != "contrastive":
        # the other objectives rebuild the clean image at the model's input size: no other views to cut
        for key in ("source_size", "local_crops", "neighbours"):
            if objective.get(key):
                raise UserError(f"{prefix}objective.{key}={objective[key]} needs objective.name=contrastive "
                                f"(this run's objective is {enum_value(objective.name)}): drop it, or use "
                                "experiment=contrastive")


# Rules across keys, by schema (a subclass inherits its base's): validate() applies the rule of the
# schema it is given; a nested schema's rule applies where its owner says (train's eval_embed: with
# evaluate=true only, since it is only used then; `embed train_run=` checks what it inherits itself).
CROSS_CHECKS: dict[type, Callable[[Any, str], None]] = {EmbedSettings: check_reranking, TrainConfig: _check_train}


def safe_on_resume(schema: type) -> frozenset[str]:
    """The top-level keys the schema marks as safe to change on `resume=` (metadata SAFE)."""
    return frozenset(f.name for f in dataclasses.fields(schema) if f.metadata.get("safe_on_resume"))


def validate(cfg: DictConfig, schema: type, prefix: str = "", command: str = "") -> None:
    """Check the ranges and choices declared in the schema's field metadata, then the schema's rule
    across keys (CROSS_CHECKS); raise UserError naming the key. A key with `choices` (an Enum) is
    set to its member here (`null` to the member metadata `null` names), so the command gets the Enum."""
    _check_fields(cfg, schema, prefix, command)
    for klass in schema.__mro__:
        if klass in CROSS_CHECKS:
            CROSS_CHECKS[klass](cfg, prefix)
            break


def _check_fields(cfg: DictConfig, schema: type, prefix: str, command: str) -> None:
    hints = typing.get_type_hints(schema)
    known = [f.name for f in dataclasses.fields(schema)]
    for key in cfg:
        if key not in known:  # added with +key=...: a typo the schema cannot type-check
            raise UserError(unknown_key_message(f"{prefix}{key}", known, command))
    for f in dataclasses.fields(schema):
        if f.name not in cfg or OmegaConf.is_missing(cfg, f.name):
            continue  # missing required values are reported where they are first used
        key, value = f"{prefix}{f.name}", cfg[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            if value is not None:
                _check_fields(value, hints[f.name], key + ".", command)
            continue
        if "choices" in f.metadata:
            cfg[f.name] = _choice(key, value, f.metadata["choices"], f.metadata.get("null"))
            continue
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if lo is not None and value is not None and value < lo:
            raise UserError(f"{key}={value} is out of range: it must be >= {lo}")
        if hi is not None and value is not None and value > hi:
            raise UserError(f"{key}={value} is out of range: it must be <= {hi}")


def _choice(key: str, value: Any, choices: type[enum.Enum], null: enum.Enum | None) -> enum.Enum:
    """value (None, a member or its name) as a member of choices; a UserError listing them otherwise."""
    if value is None and null is not None:
        return null
    try:
        return choices(enum_value(value))
    except ValueError:
        names = ["null" if member is null else member.value for member in choices]
        raise UserError(f"{key}={'null' if value is None else value}: choose one of {', '.join(names)}") from None
