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
from landmark_ae.common import OUTPUTS_ENV, RUN_STAMP_FORMAT, default_output_dir, launched_by_torchrun, secondary_rank
from landmark_ae.config import config_dir, register_configs, validate
from landmark_ae.errors import UserError, describe_os_error
from landmark_ae.output import StdoutClosed
from landmark_ae.runs import RUN_RECORD, Run, remove_run_dir, remove_temp_files, run_lock, write_run_record

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
# conf/paths/default.yaml: where runs go unless paths.output_dir is given ($LANDMARK_AE_OUTPUTS or ./outputs).
OmegaConf.register_new_resolver("default_output_dir", default_output_dir, replace=True)
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


def say(command: str, message: str, code: int) -> None:
    """`landmark-ae <command>: <message>` on stderr, then exit with `code`."""
    print(f"landmark-ae {command}: {message}", file=sys.stderr)
    sys.exit(code)


def fail(command: str, message: str, code: int = 2) -> None:
    say(command, f"error: {message}", code)


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


def _torchrun_argv(command: str, argv: list[str]) -> list[str]:
    """Under torchrun: every rank composes the same run dir (rank 0's timestamp, or resume=), and
    ranks other than 0 leave Hydra's record and the log file to rank 0, logging warnings to stderr."""
    if not launched_by_torchrun():
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


# The outputs dir and those of its parents that did not exist before this command (launch): a run
# removed for holding no work takes them with it when they are left empty.
_CREATED_OUTPUTS: list[Path] = []


def _check_output_dir(argv: list[str]) -> None:
    """Refuse an outputs dir that is, or lies under, a file (one line, not Hydra's traceback), and
    note which of its folders this command will create."""
    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("paths.output_dir=")]
    named = f"paths.output_dir={given[-1]}" if given else f"{OUTPUTS_ENV}={default_output_dir()}"
    out = Path(given[-1] if given else default_output_dir()).expanduser().absolute()
    _CREATED_OUTPUTS.clear()
    for path in (out, *out.parents):
        if path.is_dir():
            return
        if path.exists() or path.is_symlink():
            where = "is a file" if path == out else f"lies under {path}, which is a file"
            raise UserError(f"{named}: the outputs dir {where}, not a folder: point {OUTPUTS_ENV} or "
                            "paths.output_dir at a folder (it is created if missing)")
        _CREATED_OUTPUTS.append(path)


def launch(command: str, hydra_main: Callable[[], Any]) -> None:
    """Run a command's @hydra.main, after the checks that must come before Hydra creates a run dir."""
    hydra_errors.COMMAND = command
    try:
        argv = resume_argv(command, sys.argv[1:])
        _check_output_dir(argv)
        sys.argv = [sys.argv[0], *_torchrun_argv(command, argv)]
    except UserError as exc:
        fail(command, str(exc))
    hydra_main()


class Terminated(Exception):
    """SIGTERM (what `kill` and schedulers send), raised in the main thread like KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


# run.json keys that say what a run started from (the dataset, the checkpoint): a resumable run that
# recorded one has chosen its inputs, and `resume=` continues with them (embed re-embeds with them).
STARTED_FROM = ("data_dir", "train_run", "images")


def holds_work(run_dir: Path, command: str) -> bool:
    """Whether a run dir holds work worth keeping: anything beyond Hydra's record, the log, run.json
    and the lock, or (prepare, train, embed) a record of what it started from."""
    if not run_dir.is_dir():
        return False
    record = Run(run_dir).record or {}
    if command in SAFE_ON_RESUME and any(record.get(key) for key in STARTED_FROM):
        return True
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
    continue (exit 130/143). An unexpected exception (a bug) is recorded `failed` and keeps its
    traceback. A reader that closes stdout early (`| head -1`) ends the command quietly (exit 141).
    """
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    job = _Job(command, Path(hydra_cfg.runtime.output_dir), bool(cfg.get("resume")))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with nullcontext() if job.secondary else run_lock(job.dir):
            validate(cfg, schema, command=command)
            if job.resumed:
                resume_conflicts(command, cfg, job.dir, dict(hydra_cfg.runtime.choices))
                removed = 0 if job.secondary else remove_temp_files(job.dir)
                if removed:
                    log.info("removed %d temp file(s) left by the interrupted run", removed)
            job.working = True
            results = body(cfg, job.dir)
    except (UserError, MissingMandatoryValue) as exc:
        job.refused(exc)
    except (KeyboardInterrupt, Terminated) as exc:
        job.interrupted(143 if isinstance(exc, Terminated) else 130)
    except (BrokenPipeError, StdoutClosed):  # `| head`: the reader went; cli.py exits 141, quietly
        job.end("interrupted", "its reader closed stdout before every result was written", level=None)
        raise StdoutClosed() from None
    except OSError as exc:
        job.os_error(exc)
    except Exception as exc:
        job.end("failed", one_line(exc))
        raise  # a bug: recorded failed, and the traceback shows
    if job.secondary:
        return results  # rank 0 prints the run's results
    try:  # one write: the blocks of parallel sweep jobs (hydra/launcher=joblib) sharing stdout do not interleave
        sys.stdout.write("".join(f"{key}\t{value}\n" for key, value in (results or {}).items()))
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed() from None
    return results


def execute_in_temp_dir(command: str, cfg: DictConfig, schema: type, body: Stage) -> dict[str, Any] | None:
    """`execute` for a command that writes no run of its own (`runs`, `report`): Hydra makes a run dir
    for every command, so theirs is a temp dir (conf/<command>.yaml), removed here whatever happens,
    so nothing is added under the outputs dir."""
    from hydra.core.hydra_config import HydraConfig

    own_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return execute(command, cfg, schema, body)
    finally:
        logging.shutdown()  # closes <command>.log, the job log's file handler, before its dir goes
        remove_run_dir(own_dir)


def one_line(exc: BaseException) -> str:
    """An exception as `Type: first line of its message`."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class _Job:
    """How execute leaves the run dir Hydra gave a command that does not complete."""

    def __init__(self, command: str, run_dir: Path, resumed: bool):
        self.command, self.dir, self.resumed = command, run_dir, resumed
        self.secondary = secondary_rank()
        # Only a dir this call created may be removed on error; never one named by resume=.
        self.fresh = not resumed and not self.secondary and Run(run_dir).record is None
        self.working = False  # set once the checks have passed: a refused resume leaves its run as it was

    def continue_hint(self) -> str:
        return f"continue with resume={self.dir}" if self.command in SAFE_ON_RESUME else "run it again"

    def end(self, status: str, message: str, level: int | None = logging.ERROR) -> bool:
        """Remove the run dir if this call created it and it holds no work (True), else record it with
        its status and the one-line message (also in its log at `level`; None: not logged). Ranks other
        than 0 of a torchrun job leave the run's record to rank 0."""
        if self.secondary:
            return False
        if self.fresh and not holds_work(self.dir, self.command):
            remove_run_dir(self.dir, created=_CREATED_OUTPUTS)
            return True
        if level is not None:
            log.log(level, "%s", message)
        if self.dir.is_dir():
            write_run_record(self.dir, self.command, status, error=message)
        return False

    def refused(self, exc: Exception) -> None:
        if isinstance(exc, MissingMandatoryValue):
            key = exc.full_key or "a required value"
            message = f"{key} is required: set it on the command line ({key}=...)"
        else:
            message = str(exc)
        if self.resumed and not self.working:
            undo_resume_record(self.dir)
        else:
            self.end("failed", message)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise exc  # every traceback, on request
        _fail_job(self.command, message)

    def interrupted(self, code: int) -> None:
        """Not an error: finished work is kept and the line says how to continue; a run that had done
        nothing yet is removed, and the line says so (a resume hint would name a dir that is gone)."""
        message = f"interrupted; finished work is kept: {self.continue_hint()}"
        if self.end("interrupted", message, level=logging.WARNING):
            message = "interrupted before any work was done; nothing was kept: start again"
        say(self.command, message, code)

    def os_error(self, exc: OSError) -> None:
        message = describe_os_error(exc, self.continue_hint(), self.dir)
        if message is None:  # not the machine's doing: a bug, recorded failed, keeping its traceback
            self.end("failed", one_line(exc))
            raise exc
        try:
            self.end("failed", message)
        except OSError:
            pass  # the same disk or permission problem: the message still reaches the user
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise exc
        _fail_job(self.command, message, code=1)
