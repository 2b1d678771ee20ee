"""One module per subcommand, each a @hydra.main; this module holds what they share.

Importing it registers the config schemas and the `run_dir` resolver before Hydra composes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from landmark_ae.commands import hydra_errors
from landmark_ae.commands.resume import SAFE_ON_RESUME, resume_argv, resume_conflicts, undo_resume_record
from landmark_ae.config import config_dir, register_configs, validate
from landmark_ae.errors import UserError, describe_os_error
from landmark_ae.runs import (
    RUN_RECORD,
    RUN_STAMP_FORMAT,
    read_run_record,
    remove_run_dir,
    remove_temp_files,
    run_lock,
    write_run_record,
)

CONFIG_DIR = config_dir()
RUN_STAMP_ENV = "LANDMARK_AE_RUN_STAMP"
log = logging.getLogger("landmark_ae")

register_configs()
# `resume=<run dir>` reuses that dir; otherwise a new timestamped one (see conf/hydra/default.yaml).
OmegaConf.register_new_resolver(
    "run_dir", lambda resume, fresh: str(resume) if resume else fresh, replace=True
)
# A new run's timestamp; under torchrun every rank takes rank 0's (launch), so they share one run dir.
OmegaConf.register_new_resolver(
    "run_stamp", lambda: os.environ.get(RUN_STAMP_ENV) or datetime.now().strftime(RUN_STAMP_FORMAT),
    replace=True, use_cache=True,  # resolved once per config, as Hydra's own ${now:}
)
# A resumed run keeps the original .hydra/ record and adds its own beside it.
OmegaConf.register_new_resolver(
    "hydra_subdir",
    lambda resume: f".hydra/resume-{datetime.now().strftime(RUN_STAMP_FORMAT)}" if resume else ".hydra",
    replace=True,
)


def _config_groups(*groups: str) -> str:
    """`--help`: the options of each config group a command uses, e.g. `model=m1|m2|m3`."""
    options = {g: sorted(p.stem for p in (Path(CONFIG_DIR) / g).glob("*.yaml")) for g in groups}
    return "; ".join(f"{g}={'|'.join(names)}" for g, names in options.items())


OmegaConf.register_new_resolver("config_groups", _config_groups, replace=True)
hydra_errors.install()


def fail(command: str, message: str, code: int = 2) -> None:
    print(f"landmark-ae {command}: error: {message}", file=sys.stderr)
    sys.exit(code)


def _fail_job(command: str, message: str, code: int = 2) -> None:
    """`fail`, or in a multirun job a JobFailed that Hydra hands back to the launching process, which
    prints it (hydra_errors): exiting inside a joblib worker or a submitit job would cut the other jobs
    short or end as a traceback. The sweep's other jobs run to their end; `landmark-ae runs sweep=<dir>`
    shows each job's status."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise hydra_errors.JobFailed(f"landmark-ae {command}: error: {message}", code)
    fail(command, message, code)


def secondary_rank() -> bool:
    """A torchrun rank other than 0: it computes but writes nothing (rank 0 keeps the run's files)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) > 0


def _torchrun_argv(command: str, argv: list[str]) -> list[str]:
    """Under torchrun: every rank composes the same run dir (rank 0's timestamp, or resume=), and
    ranks other than 0 leave Hydra's record and the log file to rank 0, logging warnings to stderr."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return argv
    if command != "train":
        raise UserError(f"{command} runs as one process: start it without torchrun")
    if any(a in ("-m", "--multirun") for a in argv):
        raise UserError("a sweep (-m) cannot run under torchrun: run each job with torchrun instead")
    keys = {a.split("=", 1)[0].lstrip("+~") for a in argv if "=" in a}
    if not keys & {"resume", "hydra.run.dir"}:
        from landmark_ae.train.distributed import agree_run_stamp

        os.environ[RUN_STAMP_ENV] = agree_run_stamp()
    if secondary_rank():
        argv = [*argv, "hydra.output_subdir=null", "hydra.job_logging.root.handlers=[console]",
                "hydra.job_logging.root.level=WARNING", "hydra.hydra_logging.root.level=WARNING"]
    return argv


def launch(command: str, hydra_main: Callable[[], Any]) -> None:
    """Run a command's @hydra.main, after the checks that must come before Hydra creates a run dir."""
    hydra_errors.COMMAND = command
    try:
        sys.argv = [sys.argv[0], *_torchrun_argv(command, resume_argv(command, sys.argv[1:]))]
    except UserError as exc:
        fail(command, str(exc))
    hydra_main()


class Terminated(Exception):
    """SIGTERM (what `kill` and schedulers send), raised in the main thread like KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _holds_work(run_dir: Path, command: str) -> bool:
    """Whether a run dir holds anything beyond Hydra's record, the log, run.json and the lock."""
    if not run_dir.is_dir():
        return False
    bookkeeping = {".hydra", f"{command}.log", RUN_RECORD, ".lock"}
    return any(p.name not in bookkeeping for p in run_dir.iterdir())


Stage = Callable[[DictConfig, Path], "dict[str, Any] | None"]


def execute(command: str, cfg: DictConfig, schema: type, body: Stage) -> dict[str, Any] | None:
    """Validate cfg, run body(cfg, run_dir), print its results as `key<TAB>value` lines on stdout and
    return them (a sweep's job can return its objective from them: commands/train.py).

    body is the command module's own function, which imports its stage inside it: the stage (and torch)
    is imported only after validation, so a bad value is reported before torch is even imported.

    Expected failures become one line on stderr (and in the run's log), exit code 2. A run dir this
    call created that holds no work yet is removed, so a typo leaves no debris; one with work is
    kept, recorded as `failed` with the message. SIGINT/SIGTERM keep finished work and say how to
    continue (exit 130/143).
    """
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    resumed = bool(cfg.get("resume"))
    secondary = secondary_rank()
    # Only a dir this call created may be removed on error; never one named by resume=.
    fresh = not resumed and not secondary and read_run_record(run_dir) is None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    working = False  # set once the checks have passed: a refused resume leaves its run as it was
    try:
        with nullcontext() if secondary else run_lock(run_dir):
            validate(cfg, schema, command=command)
            if resumed:
                resume_conflicts(command, cfg, run_dir, dict(hydra_cfg.runtime.choices))
                removed = 0 if secondary else remove_temp_files(run_dir)
                if removed:
                    log.info("removed %d temp file(s) left by the interrupted run", removed)
            working = True
            results = body(cfg, run_dir)
    except (UserError, MissingMandatoryValue) as exc:
        if isinstance(exc, MissingMandatoryValue):
            key = exc.full_key or "a required value"
            message = f"{key} is required: set it on the command line ({key}=...)"
        else:
            message = str(exc)
        if resumed and not working:
            undo_resume_record(run_dir)
        else:
            _record_end(command, run_dir, fresh, "failed", message)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # every traceback, on request
        _fail_job(command, message)
    except (KeyboardInterrupt, Terminated) as exc:
        code = 143 if isinstance(exc, Terminated) else 130
        message = f"interrupted; finished work is kept: {_continue_hint(command, run_dir)}"
        _record_end(command, run_dir, fresh, "interrupted", message)
        fail(command, message, code=code)
    except OSError as exc:
        message = describe_os_error(exc, _continue_hint(command, run_dir), run_dir)
        if message is None:
            raise  # not the machine's doing: a bug, keep its traceback
        try:
            _record_end(command, run_dir, fresh, "failed", message)
        except OSError:
            pass  # the same disk or permission problem: the message still reaches the user
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _fail_job(command, message, code=1)
    if secondary:
        return results  # rank 0 prints the run's results
    # One write: the blocks of parallel sweep jobs (hydra/launcher=joblib) sharing stdout do not interleave.
    sys.stdout.write("".join(f"{key}\t{value}\n" for key, value in (results or {}).items()))
    sys.stdout.flush()
    return results


def _continue_hint(command: str, run_dir: Path) -> str:
    return f"continue with resume={run_dir}" if command in SAFE_ON_RESUME else "run it again"


def _record_end(command: str, run_dir: Path, fresh: bool, status: str, message: str) -> None:
    """How a run that did not complete is left: removed if this call created it and it holds no work,
    else recorded with its status and the one-line message (also in its log). Ranks other than
    0 of a torchrun job leave the run's record to rank 0."""
    if secondary_rank():
        return
    if fresh and not _holds_work(run_dir, command):
        remove_run_dir(run_dir)
        return
    log.error("%s", message)
    if run_dir.is_dir():
        write_run_record(run_dir, command, status, error=message)
