"""One-line config errors: the only place that reaches into Hydra's internals.

Hydra reports a composition error (unknown choice, wrong type, unknown key) over many lines with a
hint about HYDRA_FULL_ERROR. Hydra has no public hook for that report, so `install()` wraps the
private `hydra._internal.utils.run_and_report` that `@hydra.main` calls. pyproject allows
hydra-core 1.3.x only, and tests/test_hydra_errors.py pins the function this relies on; if a Hydra
release moves it, `install()` leaves Hydra's own (longer) reports in place instead of failing.
HYDRA_FULL_ERROR=1 always gets Hydra's full report.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError

from landmark_ae.config import unknown_key_message
from landmark_ae.errors import describe_os_error
from landmark_ae.runs import remove_run_dir

PATCHED = "_landmark_ae_concise"
COMMAND = ""  # the subcommand being run, for messages ("train has no key ...")
SWEEP_DIR: Path | None = None  # a multirun's sweep dir, once Hydra has resolved it


class JobFailed(Exception):
    """A multirun job's expected failure, as its one-line message and exit code.

    A job raises it instead of exiting: Hydra keeps it in the job's JobReturn (in a joblib worker or
    a submitit process alike), the other jobs run to their end, and the sweeper re-raises it here in
    the launching process, which prints the line and exits with the code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message, code)
        self.message, self.code = message, code

    def __str__(self) -> str:
        return self.message


class SweepDirCallback(Callback):
    """Notes a multirun's sweep dir (conf/hydra/default.yaml lists this callback), so that a sweep
    whose jobs fail to compose does not leave a sweep dir holding nothing but multirun.yaml."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global SWEEP_DIR
        SWEEP_DIR = Path(str(config.hydra.sweep.dir))  # resolves ${now:...} once, as the launcher will


def _remove_empty_sweep_dir() -> None:
    # .submitit/ holds only submitit's own logs and pickles (hydra/launcher=submitit_*).
    if SWEEP_DIR is not None and SWEEP_DIR.is_dir() and {p.name for p in SWEEP_DIR.iterdir()} <= {"multirun.yaml", ".submitit"}:
        remove_run_dir(SWEEP_DIR)


def short_message(exc: BaseException) -> str:
    """Hydra/OmegaConf composition errors span many lines; keep what the user must read."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if any(ln.startswith("Available options in") for ln in lines):
        start = next(i for i, ln in enumerate(lines) if ln.startswith("Available options in"))
        options = []
        for ln in lines[start + 1 :]:
            if ln.startswith("Config search path"):
                break
            if not ln.endswith("_schema"):  # schema nodes are not choices a user makes
                options.append(ln)
        return f"{lines[0]}; choose one of: {', '.join(options)}"
    cause = exc.__cause__
    if lines[0].startswith("Could not override") and isinstance(cause, ConfigAttributeError):
        parent = getattr(cause, "parent_node", None)
        key = getattr(cause, "full_key", None)
        if key and parent is not None and hasattr(parent, "keys"):
            return unknown_key_message(str(key), [str(k) for k in parent.keys()], COMMAND)
    override = getattr(exc, "override", None)  # OverrideParseException: the override that did not parse
    if isinstance(override, str) and "=" in override:
        key, value = override.split("=", 1)
        value = value.strip("'\"").replace("'", "\\'")
        return (f"cannot parse the value of {key} ({lines[0]}): quote values with spaces, '=', ',', brackets "
                f"or non-ASCII characters, e.g. \"{key}='{value}'\"")
    if lines[0].startswith("Ambiguous value for argument"):
        key = lines[0].split("'")[1].split("=", 1)[0] if "'" in lines[0] else "key"
        return (f"{lines[0]}: a value with a comma is a list ({key}=[a,b]) or a quoted string ({key}='a,b'); "
                "on the shell, quote the whole override: \"key='a,b'\"")
    message = " ".join(lines[:2]) if lines[0].startswith("Could not override") else lines[0]
    if cause is not None and str(cause).strip():
        message += ": " + str(cause).strip().splitlines()[0]
    return message


def install() -> bool:
    """Make @hydra.main print config errors as one line with exit code 2; True if installed."""
    try:
        import hydra._internal.utils as hydra_utils
    except ImportError:  # pragma: no cover - a Hydra without the module: keep its own reports
        return False
    original = getattr(hydra_utils, "run_and_report", None)
    if original is None:
        return False
    if getattr(original, PATCHED, False):
        return True
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    def run_and_report(func: Callable[[], Any]) -> Any:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return original(func)
        try:
            return func()
        except JobFailed as exc:
            _remove_empty_sweep_dir()
            print(exc.message, file=sys.stderr)
            sys.exit(exc.code)
        except (HydraException, OmegaConfBaseException) as exc:
            _remove_empty_sweep_dir()
            print(f"landmark-ae: error: {short_message(exc)}", file=sys.stderr)
            sys.exit(2)
        except Exception as exc:
            message = describe_os_error(exc)  # e.g. Hydra creating the run dir on a read-only disk
            if message is not None:
                print(f"landmark-ae: error: {message}", file=sys.stderr)
                sys.exit(1)
            err = exc  # anything else is Hydra's to report, unchanged

            def reraise() -> Any:
                raise err

            return original(reraise)

    setattr(run_and_report, PATCHED, True)
    hydra_utils.run_and_report = run_and_report
    return True
