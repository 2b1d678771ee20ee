"""Run directories and files: atomic writes, run records, and finding the runs a command chains from.

Every run dir holds `run.json` (command, status, data config name, times, overrides). `Run` is the
one reader of a run dir (its record, composed config, overrides, choices, manifest) and finds runs:
commands that take an earlier run by default (train takes a prepare run, ...) pick the most recent
run whose record says `complete` (Run.latest); `landmark-ae runs` lists them (Run.under).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from landmark_ae.common import OUTPUTS_ENV, RUN_STAMP_FORMAT
from landmark_ae.errors import UserError

RUN_RECORD = "run.json"
# mkstemp creates files 0600; artifacts get the ordinary mode the umask gives (0644 by default).
# Read once: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
__all__ = ["RUN_STAMP_FORMAT", "Run"]  # RUN_STAMP_FORMAT lives in common; importable from here too
_TEMP_NAMES = itertools.count()


@contextmanager
def atomic_path(dest: Path | str) -> Iterator[Path]:
    """Yield a temp path beside `dest`; on success it replaces `dest` in one rename.

    A run killed mid-write leaves only a `.tmp` file, never a half-written `dest`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(dest: Path | str, data: bytes) -> None:
    """atomic_path's contract for bytes already in hand (a temp `.<name>.<tag>.tmp` beside dest, renamed
    over it; a killed writer leaves only the temp file, which remove_temp_files clears) in the fewest
    system calls: one exclusive create with the final mode, the writes, one rename. prepare writes one
    file per image, where mkstemp + reopen + chmod cost as much as the JPEG encoding."""
    dest = Path(dest)
    while True:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{next(_TEMP_NAMES)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        except FileExistsError:  # left by an earlier process with the same pid
            continue
        except FileNotFoundError:  # the folder does not exist yet
            dest.parent.mkdir(parents=True, exist_ok=True)
            continue
        break
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(dest: Path | str, text: str) -> None:
    write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(dest: Path | str, obj: Any) -> None:
    write_text_atomic(dest, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_or_none(path: Path | str) -> Any:
    """A JSON file's contents, or None if it is missing or unreadable (a damaged file is no traceback)."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def write_run_record(run_dir: Path, command: str, status: str, **fields: Any) -> dict:
    """Create or update run.json; `started` is kept from the first write. The pid and host of the
    process writing it are recorded, so a `running` run whose process is gone reads as interrupted."""
    path = run_dir / RUN_RECORD
    record = (read_run_record(run_dir) or {}) if path.is_file() else {}
    record.update(command=command, status=status, pid=os.getpid(), host=socket.gethostname(), **fields)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record.setdefault("started", now)
    record["updated"] = now
    write_json_atomic(path, record)
    return record


def read_run_record(run_dir: Path | str) -> dict | None:
    """run.json's record, or None when there is none or it is damaged (Run says which)."""
    return Run(run_dir).record


def process_alive(pid: int | None, host: str | None) -> bool:
    """Whether process `pid` still runs; False when unknown. A pid on another host counts as alive
    (it cannot be checked from here)."""
    if not pid:
        return False
    if host and host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError, ValueError, TypeError):  # gone, or no pid at all
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def run_status(record: dict) -> str:
    """The record's status, with a `running` run whose process is gone shown as `interrupted`."""
    status = str(record.get("status", "unknown"))
    if status == "running" and not process_alive(record.get("pid"), record.get("host")):
        return "interrupted"
    return status


# What a run record's fields must be; a record that breaks this is `damaged`, never a traceback.
_RECORD_TYPES: dict[str, type] = {"command": str, "status": str, "host": str, "started": str, "updated": str}
_MAX_PID = 2**31 - 1  # a pid_t; anything larger (or a bool, a string, a list) is no process id
log = logging.getLogger(__name__)


def record_problem(record: Any) -> str | None:
    """Why a parsed run.json cannot be trusted (not an object, a field of the wrong type), or None."""
    if not isinstance(record, dict):
        return f"not a JSON object but a {type(record).__name__}"
    for key, kind in _RECORD_TYPES.items():
        if record.get(key) is not None and not isinstance(record[key], kind):
            return f"{key!r} is {record[key]!r}"
    pid = record.get("pid")
    if pid is not None and (type(pid) is not int or not 0 < pid <= _MAX_PID):
        return f"'pid' is {pid!r}"
    return None


def _load_yaml(path: Path) -> Any:
    """A YAML file as plain data (interpolations left as text); None when missing; ValueError when damaged."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path))
    except FileNotFoundError:
        return None
    except Exception as exc:  # any parse error: the file is damaged
        raise ValueError(f"{path} is damaged ({type(exc).__name__})") from None


def _subdirs(path: Path) -> list[Path]:
    """The folders in path, sorted; none when path is not a folder or vanishes while it is read."""
    try:
        with os.scandir(path) as entries:
            return sorted(Path(entry.path) for entry in entries if entry.is_dir())
    except OSError:
        return []


class Run:
    """A run dir and what it recorded: run.json (`record`, `status`), Hydra's record of it (`config`,
    `overrides`, `choices`) and `manifest`; `latest`, `under` and `sweep_jobs` find runs.

    Everything is read once, lazily; a file that is missing or damaged reads as empty here, so a
    listing never fails on one run (`damaged` and `record_problem` say what was wrong)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @cached_property
    def _record(self) -> tuple[dict | None, str | None]:
        try:
            text = (self.path / RUN_RECORD).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, None
        except (OSError, UnicodeDecodeError) as exc:
            return None, f"unreadable ({type(exc).__name__})"
        try:
            record = json.loads(text)
        except ValueError:
            return None, "not valid JSON"
        problem = record_problem(record)
        return (None, problem) if problem else (record, None)

    @property
    def record(self) -> dict | None:
        """run.json, or None when there is none or it is damaged."""
        return self._record[0]

    @property
    def damaged(self) -> bool:
        return self._record[1] is not None

    @property
    def problem(self) -> str | None:
        """What is wrong with a damaged run.json, e.g. "'pid' is 'abc'"."""
        return self._record[1]

    @property
    def command(self) -> str | None:
        return (self.record or {}).get("command")

    @property
    def status(self) -> str:
        """complete, running, failed, interrupted (running, its process gone), damaged or missing."""
        if self.damaged:
            return "damaged"
        return run_status(self.record) if self.record is not None else "missing"

    @property
    def started(self) -> str:
        return (self.record or {}).get("started") or ""

    def load_config(self, original: bool = False) -> dict | None:
        """The run's composed config: the latest resume's (.hydra/resume-*/config.yaml) if it was resumed,
        else its first (.hydra/config.yaml); `original`: the first. None when there is none; a damaged
        file raises UserError naming it."""
        hydra = self.path / ".hydra"
        candidates = [hydra / "config.yaml"] if original else [hydra / "config.yaml", *sorted(hydra.glob("resume-*/config.yaml"))]
        for path in reversed(candidates):
            try:
                cfg = _load_yaml(path)
            except ValueError as exc:
                raise UserError(f"{exc}: restore the run's .hydra/, or start a new run") from None
            if isinstance(cfg, dict):
                return cfg
        return None

    @cached_property
    def config(self) -> dict:
        """load_config(), or {} when it is missing or damaged (a listing's empty cells)."""
        try:
            return self.load_config() or {}
        except UserError:
            return {}

    def _lenient(self, relative: str) -> Any:
        try:
            return _load_yaml(self.path / relative)
        except ValueError:
            return None

    @cached_property
    def overrides(self) -> list[str]:
        """The command line the run was first composed from (.hydra/overrides.yaml), as given."""
        items = self._lenient(".hydra/overrides.yaml")
        return [str(item) for item in items] if isinstance(items, list) else []

    @cached_property
    def choices(self) -> dict[str, Any] | None:
        """The config group chosen for each group (hydra.yaml's runtime.choices: model=m1, ...)."""
        hydra = self._lenient(".hydra/hydra.yaml")
        choices = ((hydra or {}).get("hydra") or {}).get("runtime", {}).get("choices") if isinstance(hydra, dict) else None
        return choices if isinstance(choices, dict) else None

    @cached_property
    def manifest(self) -> dict | None:
        """manifest.json (what the run wrote, written last), or None when missing or damaged."""
        try:
            manifest = read_json(self.path / MANIFEST)
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) else None

    # ---- discovery ---------------------------------------------------------------------------

    @classmethod
    def under(cls, output_dir: Path | str, command: str | None = None) -> list[Run]:
        """The runs under output_dir: <command>/<time>/ and a sweep's jobs <command>/<time>/<n>/, of
        one command or (None) all. Dirs that vanish while they are listed are left out."""
        root = Path(output_dir)
        tops = [root / command] if command else _subdirs(root)
        return [run for top in tops for run_dir in _subdirs(top) for run in (cls(run_dir), *cls.sweep_jobs(run_dir))
                if (run.path / RUN_RECORD).is_file()]

    @classmethod
    def sweep_jobs(cls, sweep_dir: Path | str) -> list[Run]:
        """The jobs of a multirun sweep dir (<sweep>/<n>/run.json)."""
        return [cls(job) for job in _subdirs(Path(sweep_dir)) if (job / RUN_RECORD).is_file()]

    @classmethod
    def latest(cls, output_dir: Path | str, command: str, accept: Callable[[dict], bool] = lambda r: True) -> Run | None:
        """The most recently started complete run of `command` anywhere under <output_dir>/<command>/
        whose record `accept` likes. Damaged records are skipped, with one warning naming them."""
        root = Path(output_dir) / command
        found: list[tuple[str, float, str, Run]] = []
        damaged: list[Run] = []
        for record_path in root.glob(f"**/{RUN_RECORD}"):
            run = cls(record_path.parent)
            if run.damaged:
                damaged.append(run)
            elif run.record is not None and run.record.get("status") == "complete" and accept(run.record):
                try:
                    found.append((run.started, record_path.stat().st_mtime, str(run.path), run))
                except OSError:  # removed meanwhile
                    continue
        if damaged:
            log.warning("skipped %d damaged run record(s) under %s: %s (%s)%s", len(damaged), root.resolve(),
                        damaged[0].path / RUN_RECORD, damaged[0].problem, ", ..." if len(damaged) > 1 else "")
        return max(found, key=lambda item: item[:3])[3] if found else None

    @classmethod
    def resolve(cls, given: str | None, output_dir: Path | str, command: str, what: str, how: str,
                accept: Callable[[dict], bool] = lambda r: True) -> Run:
        """The run dir the user gave (`what`=<dir>), or the latest complete one; a UserError that says
        where it looked and what to do (`how`) if there is none; an empty value is an error (refuse_empty)."""
        refuse_empty(given, what, f"{command} run dir", f"the latest complete {command} run")
        if given:
            path = Path(given).expanduser()
            if not path.is_dir():
                raise UserError(f"{what} {given} does not exist: {how}")
            return cls(path)
        run = cls.latest(output_dir, command, accept)
        if run is None:
            where = (Path(output_dir) / command).resolve()
            raise UserError(f"no complete {command} run found under {where}: {how} (runs are looked up under "
                            f"{OUTPUTS_ENV} or paths.output_dir=<outputs dir>)")
        return run


def refuse_empty(value: Any, what: str, placeholder: str, default: str) -> None:
    """An empty `what=` (a shell's `what=$VAR` with VAR unset) is a UserError, never the default: a
    script whose earlier step failed must not go on with some other run or dataset."""
    if value is not None and not str(value).strip():
        raise UserError(f"{what} is empty: pass {what}=<{placeholder}>, or leave {what} out for {default}")


def check_resumable(given: str, command: str) -> Path:
    """The run dir `resume=` names, if it is an unfinished run of `command` that no process is working
    on; otherwise a UserError that says what to do. Called before anything is created or written."""
    path = Path(given).expanduser()
    if not path.is_dir():
        raise UserError(f"resume={given}: no such run dir; start a new run without resume=")
    run = Run(path)
    if run.record is None and not run.damaged:
        raise UserError(f"resume={given}: not a landmark-ae run dir (no {RUN_RECORD}); start a new run without resume=")
    if run.damaged:
        raise UserError(f"resume={given}: its {RUN_RECORD} is damaged ({run.problem}); start a new run without resume=")
    record = run.record
    if run.command != command:
        raise UserError(f"resume={given} is a {run.command} run: resume it with "
                        f"`landmark-ae {run.command} resume={given}`")
    if not (path / ".hydra" / "config.yaml").is_file():
        raise UserError(f"resume={given}: the run's own config (.hydra/config.yaml) is missing; start a new run")
    status = run_status(record)
    if status == "complete" and command == "prepare" and record.get("retryable"):
        return path  # a finished dataset with failures worth retrying: prepare fetches only those
    if status == "complete":
        raise UserError(f"resume={given}: that {command} run is already complete, so there is nothing to resume; "
                        f"start a new run (without resume=)")
    if status == "running":
        raise UserError(f"resume={given}: that run is in progress (process {record.get('pid')} on "
                        f"{record.get('host')}); wait for it, or stop it first")
    return path


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One process per run dir: `.lock` holds the owner's pid; a lock whose process is gone is taken over."""
    path = Path(run_dir) / ".lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
        except FileExistsError:
            try:
                owner = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and process_alive(owner, None):
                raise UserError(f"{run_dir} is in use by process {owner}: wait for it, or stop it first") from None
            path.unlink(missing_ok=True)  # left by a killed process
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    else:  # pragma: no cover - another process took the stale lock between our two tries
        raise UserError(f"{run_dir} is in use by another process: wait for it, or stop it first")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def remove_temp_files(run_dir: Path) -> int:
    """Temp files (`.<name>.<random>.tmp`) a killed run left anywhere in its run dir; returns how many."""
    stale = [p for p in Path(run_dir).rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def remove_run_dir(run_dir: Path, created: Iterable[Path] = ()) -> None:
    """Remove a run dir that holds no work, its `<output dir>/<command>/` parent if that is left empty,
    and then each of `created` (the folders above it this command made, deepest first) left empty, so
    a refused run leaves nothing behind."""
    shutil.rmtree(run_dir, ignore_errors=True)
    for folder in (Path(run_dir).parent, *created):
        try:
            Path(folder).rmdir()  # only succeeds when empty
        except OSError:
            pass


# ---- manifests: what a run wrote, checked by the runs that read it ----------------------------

MANIFEST = "manifest.json"
# Files up to this size are fingerprinted whole (sha256); larger arrays by their size and the sha256
# of their first and last MiB, which catches truncation and rewrites at a cost independent of size.
_WHOLE_HASH_LIMIT = 64 * 2**20
_END = 2**20


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_fingerprint(path: Path) -> str:
    size = path.stat().st_size
    if size <= _WHOLE_HASH_LIMIT:
        return f"sha256:{sha256_file(path)}"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(_END))
        f.seek(size - _END)
        digest.update(f.read(_END))
    return f"sha256-ends:{digest.hexdigest()}"


def write_manifest(run_dir: Path, names: list[str]) -> None:
    """Record each artifact's size and fingerprint; written last, atomically, when the run completes."""
    artifacts = {}
    for name in names:
        path = Path(run_dir) / name
        if path.is_file():
            artifacts[name] = {"size": path.stat().st_size, "fingerprint": file_fingerprint(path)}
    write_json_atomic(Path(run_dir) / MANIFEST, {"artifacts": artifacts})


def check_artifacts(run_dir: Path, names: list[str], remake: str) -> None:
    """Refuse, in one line naming the file and how to remake it, an artifact that is missing or
    differs from what its run recorded. Runs without a manifest (older ones) are checked for presence."""
    run_dir = Path(run_dir)
    try:
        recorded = read_json(run_dir / MANIFEST)["artifacts"] if (run_dir / MANIFEST).is_file() else {}
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{run_dir / MANIFEST} is damaged: {remake}") from None
    for name in names:
        path = run_dir / name
        if not path.is_file():
            raise UserError(f"{path} is missing: {remake}")
        entry = recorded.get(name)
        if entry is None:
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            raise UserError(f"{path} is truncated or was changed ({size} bytes; {entry['size']} when its run wrote it): "
                            f"{remake}")
        if file_fingerprint(path) != entry["fingerprint"]:
            raise UserError(f"{path} was changed after its run wrote it: {remake}")
