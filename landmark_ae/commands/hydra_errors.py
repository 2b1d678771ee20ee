"""One-line config errors: the only place that reaches into Hydra's internals.

Hydra reports a composition error (unknown choice, wrong type, unknown key) over many lines with a
hint about HYDRA_FULL_ERROR. Hydra has no public hook for that report, so `install()` wraps the
private `hydra._internal.utils.run_and_report` that `@hydra.main` calls. pyproject allows
hydra-core 1.3.x only, and tests/test_hydra_errors.py pins the function this relies on; if a Hydra
release moves it, `install()` leaves Hydra's own (longer) reports in place instead of failing.
HYDRA_FULL_ERROR=1 always gets Hydra's full report.

Also here, as the launching process sees them: a Ctrl-C or SIGTERM of a multirun (its jobs are
stopped and waited for, then one line names the sweep: sweep_interrupts), an Optuna search space
Optuna refuses, Hydra's mode flags combined (`-m ... --cfg job`), and third-party log lines that
read as failures (QUIET_LOGGERS).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError

from landmark_ae.commands import sweep_interrupts
from landmark_ae.errors import describe_os_error, unknown_key_message
from landmark_ae.runs import remove_run_dir

PATCHED = "_landmark_ae_concise"
COMMAND = ""  # the subcommand being run, for messages ("train has no key ...")
SWEEP_DIR: Path | None = None  # a multirun's sweep dir, once Hydra has resolved it

# INFO lines that look like failures but are not: FAISS tries its AVX512/AVX2 builds first
# ("Could not load library with AVX512 support due to: ModuleNotFoundError"), and Optuna's
# storage layer, alembic, lists each plugin it sets up. Their warnings and errors still show.
QUIET_LOGGERS = ("faiss.loader", "alembic")


def quiet_third_party_loggers() -> None:
    """Set before Hydra configures logging: its dictConfig keeps the levels of loggers it does not name."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


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
    whose jobs fail to compose does not leave a sweep dir holding nothing but multirun.yaml, and an
    interrupted sweep stops its jobs and names itself (sweep_interrupts)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global SWEEP_DIR
        SWEEP_DIR = Path(str(config.hydra.sweep.dir))  # resolves ${now:...} once, as the launcher will
        sweep_interrupts.watch(SWEEP_DIR)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_interrupts.unwatch()


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


def search_space_message(exc: BaseException) -> str | None:
    """An Optuna search space Optuna refused (`interval(1.0,0.05)`, `tag(log,interval(0,1))`,
    `range(1,0)`), as one line naming the override; None for any other error. Optuna raises a bare
    ValueError while the sweeper turns one override into a distribution: that frame names it."""
    tb = exc.__traceback__
    override = None
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "create_optuna_distribution_from_override":
            override = tb.tb_frame.f_locals.get("override")
        tb = tb.tb_next
    if override is None or not isinstance(exc, ValueError):
        return None
    given = getattr(override, "input_line", None) or "a search space"  # the override as typed
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"hydra/sweeper=optuna cannot search {given}: {reason[:1].lower()}{reason[1:].rstrip('.')}"


# Hydra refuses to combine these flags with a ValueError raised outside run_and_report.
ONE_MODE_ERROR = "Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified"


def one_mode_message(argv: list[str]) -> str:
    """What to do instead of combining Hydra's mode flags (`train -m model=m1,m2 --cfg job`)."""
    if any(a in ("-m", "--multirun") for a in argv) and any(a in ("-c", "--cfg") for a in argv):
        return ("--cfg shows the config of one run, not of a sweep: drop -m and give one value per key "
                f"(landmark-ae {COMMAND or 'train'} model=m1 --cfg job)")
    return "give one of -m/--multirun, --cfg, --info, --run and --shell-completion at a time"


def error_line(message: str) -> str:
    return f"landmark-ae {COMMAND}: error: {message}" if COMMAND else f"landmark-ae: error: {message}"


def _report(original: Callable[[Callable[[], Any]], Any], func: Callable[[], Any]) -> Any:
    """Hydra's run_and_report, with expected failures as one line on stderr (see install)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

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
    except KeyboardInterrupt:
        if SWEEP_DIR is None:
            raise  # not a sweep: the command's own handling (execute) has already run
        sweep_interrupts.end_sweep(SWEEP_DIR, COMMAND, 128 + (sweep_interrupts.SIGNAL or signal.SIGINT))
    except SystemExit as exc:  # a sweep's in-process job (the basic launcher) ended by a signal
        if SWEEP_DIR is not None and exc.code in (130, 143):
            sweep_interrupts.end_sweep(SWEEP_DIR, COMMAND, int(exc.code))
        raise
    except Exception as exc:
        message = search_space_message(exc)
        if message is not None:
            _remove_empty_sweep_dir()
            print(error_line(message), file=sys.stderr)
            sys.exit(2)
        message = describe_os_error(exc)  # e.g. Hydra creating the run dir on a read-only disk
        if message is not None:
            print(f"landmark-ae: error: {message}", file=sys.stderr)
            sys.exit(1)
        err = exc  # anything else is Hydra's to report, unchanged

        def reraise() -> Any:
            raise err

        return original(reraise)


def _concise_run_hydra(original: Callable[..., Any]) -> Callable[..., Any]:
    def run_hydra(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except ValueError as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or not str(exc).startswith(ONE_MODE_ERROR):
                raise
            print(error_line(one_mode_message(sys.argv[1:])), file=sys.stderr)
            sys.exit(2)

    setattr(run_hydra, PATCHED, True)
    return run_hydra


# Override keys through which a run could set `hydra.mode` (Hydra's config-side `-m`): the key
# itself, Hydra's config groups, a user's config dir, and experiment files.
_MODE_SETTERS = ("hydra.mode", "hydra", "hydra.searchpath", "experiment")


def _may_set_mode(overrides: list[str]) -> bool:
    """Whether the overrides could set hydra.mode: the shipped configs never do (a test checks)."""
    keys = {o.split("=", 1)[0].lstrip("+~").split("@", 1)[0] for o in overrides}
    return any(k == s or k.startswith(s + "/") for k in keys for s in _MODE_SETTERS)


def _quick_get_mode(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hydra composes the whole config once just to read hydra.mode, then again for the run: a
    third of a one-shot `query`. Where no override can set the mode, the answer is None (the
    command line's -m decides), as Hydra's compose would find."""
    def get_mode(self: Any, config_name: Any, overrides: list[str]) -> Any:
        if _may_set_mode(list(overrides)):
            return original(self, config_name, overrides)
        return None

    setattr(get_mode, PATCHED, True)
    return get_mode


def install() -> bool:
    """Make @hydra.main print config errors as one line with exit code 2; True if installed."""
    try:
        import hydra._internal.utils as hydra_utils
        import hydra.main  # noqa: F401 - the module; `hydra.main` the attribute is the decorator
    except ImportError:  # pragma: no cover - a Hydra without the modules: keep its own reports
        return False
    original = getattr(hydra_utils, "run_and_report", None)
    if original is None:
        return False
    quiet_third_party_loggers()
    if getattr(original, PATCHED, False):
        return True
    run_and_report = functools.partial(_report, original)
    setattr(run_and_report, PATCHED, True)
    hydra_utils.run_and_report = run_and_report
    # @hydra.main calls the _run_hydra it imported by name: the mode-flag check is raised there.
    hydra_main = sys.modules["hydra.main"]
    if callable(getattr(hydra_main, "_run_hydra", None)) and not getattr(hydra_main._run_hydra, PATCHED, False):
        hydra_main._run_hydra = _concise_run_hydra(hydra_main._run_hydra)
    from hydra._internal.hydra import Hydra

    if callable(getattr(Hydra, "get_mode", None)) and not getattr(Hydra.get_mode, PATCHED, False):
        Hydra.get_mode = _quick_get_mode(Hydra.get_mode)
    return True
