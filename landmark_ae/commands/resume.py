"""`resume=<run dir>`: a resumed run is composed from its own overrides, and only keys that cannot
change its result may differ on the command line. Checked before Hydra writes anything (resume_argv)
and once Hydra has composed the config (resume_conflicts)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from landmark_ae.config import EmbedConfig, PrepareConfig, TrainConfig
from landmark_ae.config_checks import safe_on_resume
from landmark_ae.errors import UserError
from landmark_ae.runs import Run, check_resumable

_STARTED = time.time()

# The commands with resume=, and the keys a resumed run may change from its own config (those their
# schema marks safe_on_resume: they do not change what the run computes).
SAFE_ON_RESUME: dict[str, frozenset[str]] = {
    command: safe_on_resume(schema)
    for command, schema in (("prepare", PrepareConfig), ("train", TrainConfig), ("embed", EmbedConfig))
}


def _override_key(item: str) -> str:
    return item.lstrip("+~").split("=", 1)[0]


def resume_argv(command: str, argv: list[str]) -> list[str]:
    """argv with the resumed run's own overrides (.hydra/overrides.yaml) put back in front of the
    command line's, so Hydra composes the run's config; a key given again on the command line wins
    here, and `execute` refuses it unless it is safe to change. Nothing is written."""
    given = next((a.split("=", 1)[1] for a in argv if _override_key(a) == "resume" and "=" in a), None)
    if not given or given == "null":
        return argv
    if command not in SAFE_ON_RESUME:
        raise UserError(f"{command} has no resume=: it keeps no partial work; run it again")
    original = Run(check_resumable(given, command)).overrides
    mine = {_override_key(a) for a in argv if "=" in a and not a.startswith("-")}
    kept = [o for o in original if _override_key(o) not in mine and _override_key(o) != "resume"]
    at = next(i for i, a in enumerate(argv) if _override_key(a) == "resume")
    return [*argv[:at], *kept, *argv[at:]]


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def resume_conflicts(command: str, cfg: DictConfig, run_dir: Path, choices: dict[str, Any]) -> None:
    """Refuse a resumed run whose composed config differs from its own in a key not safe to change:
    first a config group chosen differently (model=..., data=...), then any single key."""
    safe = SAFE_ON_RESUME[command]

    def refuse(key: str, was: Any, now: Any) -> None:
        raise UserError(
            f"resume: {key} is {_short(was)} in this run but {_short(now)} on the command line; a resumed run keeps "
            f"its own settings (safe to change: {', '.join(sorted(safe - {'resume'}))}): drop the override, "
            "or start a new run"
        )

    # The run's own record, as first composed: this resume's (.hydra/resume-<now>/) is what is checked.
    run = Run(run_dir)
    saved_choices = run.choices
    if saved_choices is not None:
        for group in sorted(k for k in choices if not str(k).startswith("hydra") and k != "paths"):
            if saved_choices.get(group) != choices[group]:
                refuse(group, saved_choices.get(group), choices[group])
    saved = _flatten(run.load_config(original=True) or {})
    now = _flatten(OmegaConf.to_container(cfg, enum_to_str=True))
    for key in sorted(saved.keys() | now.keys()):
        if key.split(".")[0] in safe or key.startswith("paths."):
            continue
        if saved.get(key, "<unset>") != now.get(key, "<unset>"):
            refuse(key, saved.get(key, "<unset>"), now.get(key, "<unset>"))


def undo_resume_record(run_dir: Path) -> None:
    """A refused resume changes nothing: drop the config record Hydra added for it (the resume-*
    record made since this process started; its name cannot be asked for again: it holds a time)."""
    for subdir in (run_dir / ".hydra").glob("resume-*"):
        if subdir.stat().st_mtime >= _STARTED - 1:
            shutil.rmtree(subdir, ignore_errors=True)
