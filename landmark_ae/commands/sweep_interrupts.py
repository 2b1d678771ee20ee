"""Ctrl-C (or SIGTERM) of a multirun, in the launching process: stop the jobs, wait, say how to go on.

Left alone, joblib answers a KeyboardInterrupt in the launching process by killing its loky workers
with SIGKILL: a job that was training stays `running` in its run.json, and the launcher ends on a
traceback (exit -2). Instead, `watch(sweep_dir)` (hydra_errors.SweepDirCallback, when the sweep
starts) installs a handler that passes the signal on to each job still `running` in another
process (its execute() records it `interrupted`, keeping its finished epochs), waits for them, and
only then raises KeyboardInterrupt in the launcher. hydra_errors then calls `end_sweep`: any job
whose process is gone but whose record still says `running` (killed before it could write) is
recorded `interrupted`, and one line names the sweep dir and how to resume; exit 130 (143: SIGTERM).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from landmark_ae.runs import Run, process_alive, remove_run_dir, write_run_record

SIGNAL: int | None = None  # the signal that interrupted the sweep, once one has
GRACE_S = 2.0  # a terminal's Ctrl-C reaches the jobs as well: they get this long to stop on their own
WAIT_S = 60.0  # then each job still running gets the signal, and this long to record itself
_previous: dict[int, Any] = {}


def jobs(sweep_dir: Path) -> list[tuple[Path, dict]]:
    """The sweep's job dirs (runs.Run.sweep_jobs) that hold a readable run record, with it."""
    return [(run.path, run.record) for run in Run.sweep_jobs(sweep_dir) if run.record is not None]


def running_elsewhere(sweep_dir: Path) -> dict[int, Path]:
    """pid -> job dir of the jobs recorded `running` by another live process on this host."""
    here = socket.gethostname()
    found = {}
    for run_dir, record in jobs(sweep_dir):
        pid = record.get("pid")
        if (record.get("status") == "running" and isinstance(pid, int) and pid != os.getpid()
                and record.get("host", here) == here and process_alive(pid, here)):
            found[pid] = run_dir
    return found


def _wait_while_running(sweep_dir: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while running_elsewhere(sweep_dir) and time.monotonic() < deadline:
        time.sleep(0.1)


def stop_jobs(sweep_dir: Path, signum: int) -> None:
    """Pass `signum` on to the jobs still running in other processes (after GRACE_S), and wait until they
    have recorded themselves (a job in this process, under the basic launcher, gets the KeyboardInterrupt
    itself)."""
    _wait_while_running(sweep_dir, GRACE_S)
    for pid in running_elsewhere(sweep_dir):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    _wait_while_running(sweep_dir, WAIT_S)


def watch(sweep_dir: Path) -> None:
    """Handle SIGINT and SIGTERM in the launching process for the length of the sweep."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread

    def handle(signum: int, frame: Any) -> None:
        global SIGNAL
        if SIGNAL is not None:  # a second Ctrl-C while waiting: stop waiting
            raise KeyboardInterrupt
        SIGNAL = signum
        stop_jobs(sweep_dir, signum)
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        _previous.setdefault(signum, signal.getsignal(signum))
        signal.signal(signum, handle)


def unwatch() -> None:
    """The handlers from before `watch` (the sweep has ended)."""
    global SIGNAL
    if threading.current_thread() is threading.main_thread():
        for signum, handler in _previous.items():
            signal.signal(signum, handler)
    _previous.clear()
    SIGNAL = None


def settle(run_dir: Path, record: dict, command: str) -> None:
    """A job of this host still recorded `running` whose process is gone (joblib killed its worker
    before it could write): record it interrupted. Jobs on other hosts are their scheduler's."""
    pid, host = record.get("pid"), record.get("host")
    if record.get("status") != "running" or (host and host != socket.gethostname()):
        return
    deadline = time.monotonic() + 5  # a killed worker may take a moment to go
    while pid != os.getpid() and process_alive(pid, host) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid == os.getpid() or not process_alive(pid, host):
        write_run_record(run_dir, str(record.get("command") or command), "interrupted",
                         error="interrupted with its sweep before it could record itself")


def end_sweep(sweep_dir: Path, command: str, code: int) -> None:
    """After an interrupt: no job left `running`, one line on how to go on, exit `code`."""
    unwatch()
    recorded = jobs(sweep_dir)
    for run_dir, record in recorded:
        settle(run_dir, record, command)
    if not recorded:
        if Path(sweep_dir).is_dir() and {p.name for p in Path(sweep_dir).iterdir()} <= {"multirun.yaml", ".submitit"}:
            remove_run_dir(Path(sweep_dir))
        print(f"landmark-ae {command}: interrupted before any job of the sweep started; nothing was done: "
              "start it again", file=sys.stderr)
        sys.exit(code)
    print(f"landmark-ae {command}: interrupted; the sweep {sweep_dir} keeps its finished work "
          f"(`landmark-ae runs sweep={sweep_dir}` lists its jobs): {_resume_hint(command, sweep_dir)}",
          file=sys.stderr)
    sys.exit(code)


def _resume_hint(command: str, sweep_dir: Path) -> str:
    try:
        from landmark_ae.commands.resume import SAFE_ON_RESUME

        resumable = command in SAFE_ON_RESUME
    except ImportError:  # pragma: no cover - the resume rules moved: every sweep is a train sweep in practice
        resumable = command == "train"
    if resumable:
        return f"continue a job with `landmark-ae {command} resume={sweep_dir}/<job>`"
    return "run the jobs again"
