"""The scripts' `key=value` arguments, composed against a dataclass schema as the CLI's are.

    settings, data_overrides = parse_args(Table1Args, sys.argv[1:], "table1", passthrough=("data",))

A key the schema lacks gets the CLI's did-you-mean (`table1 has no key 'epoch'; did you mean
'epochs'?`), a value of the wrong type names the key; both one line on stderr, exit 2. `-h`/`--help`
prints the script's docstring. A list field takes `a,b,c` (or `[a,b,c]`); `null` clears an optional
field. `--key value` and `--key=value` are the same as `key=value` (`-` in a key reads as `_`).
Keys under a `passthrough` prefix (`data=gldv2`, `data.root=...`) are not the script's own: they
are returned as given, for the CLI runs the script starts, which check them.

Also what the benchmarks share: the machine line they print, and the query images of an embed run.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import typing
from typing import Any, Callable, Sequence, TypeVar

from landmark_ae.errors import unknown_key_message

T = TypeVar("T")


def _pairs(argv: Sequence[str], prog: str, known: list[str]) -> list[tuple[str, str]]:
    """argv as (key, value) pairs, `--key value` and `--key=value` read as `key=value`."""
    pairs: list[tuple[str, str]] = []
    items = list(argv)
    while items:
        item = items.pop(0)
        if item.startswith("--"):
            key, sep, value = item[2:].partition("=")
            if not sep:
                if not items:
                    fail(prog, f"--{key} needs a value (--{key} VALUE or {key.replace('-', '_')}=VALUE)")
                value = items.pop(0)
            pairs.append((key.replace("-", "_"), value))
        elif "=" in item:
            key, value = item.split("=", 1)
            pairs.append((key, value))
        else:
            fail(prog, f"arguments are key=value, got {item!r}; keys: {', '.join(known)}")
    return pairs


def fail(prog: str, message: str) -> typing.NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _is_list(field_type: Any) -> bool:
    return typing.get_origin(field_type) is list or any(
        typing.get_origin(a) is list for a in typing.get_args(field_type))


def parse_args(schema: type[T], argv: Sequence[str], prog: str, passthrough: Sequence[str] = (),
               doc: str | None = None) -> tuple[T, list[str]]:
    """The schema's settings from argv (defaults where not given), and the passthrough overrides."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if any(a in ("-h", "--help") for a in argv):
        try:
            print((doc or schema.__doc__ or "").strip(), flush=True)
        except BrokenPipeError:  # `--help | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    hints = typing.get_type_hints(schema)
    known = [f.name for f in dataclasses.fields(schema)]  # type: ignore[arg-type]
    cfg = OmegaConf.structured(schema)
    overrides: list[str] = []
    for key, value in _pairs(argv, prog, known):
        if key.split(".", 1)[0] in passthrough:
            overrides.append(f"{key}={value}")
            continue
        if key not in known:
            fail(prog, unknown_key_message(key, known, prog))
        parsed: Any = None if value == "null" else value
        if parsed is not None and _is_list(hints[key]):
            parsed = [v for v in value.removeprefix("[").removesuffix("]").split(",") if v != ""]
        try:
            cfg[key] = parsed
        except OmegaConfBaseException as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            fail(prog, f"{key}={value}: {reason}")
    return typing.cast(T, OmegaConf.to_object(cfg)), overrides


def load_yaml(schema: type[T], path: str, prog: str) -> T:
    """A YAML file (conf/quality.yaml) read against its schema: a misspelt key or a wrong type is one line."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    try:
        return typing.cast(T, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(path))))
    except FileNotFoundError:
        fail(prog, f"{path} does not exist")
    except ConfigKeyError as exc:
        key = str(getattr(exc, "full_key", "") or "a key")
        where = getattr(exc, "object_type", None)  # the schema (or nested schema) the key is not in
        known = [f.name for f in dataclasses.fields(where)] if dataclasses.is_dataclass(where) else []
        fail(prog, f"{path}: {unknown_key_message(key, known, getattr(where, '__name__', 'it'))}")
    except OmegaConfBaseException as exc:
        fail(prog, f"{path}: {str(exc).strip().splitlines()[0]}")


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(143)  # chain.run_cli passes SIGTERM on to the step running and waits for it


def run_script(prog: str, main: Callable[[list[str]], None], argv: list[str]) -> None:
    """main(argv), where a Ctrl-C (or SIGTERM) ends in one line naming the step's run and how to go on,
    exit 130 (143): the step, a child process, has recorded its run as interrupted (chain.run_cli)."""
    from landmark_ae.chain import StepInterrupted

    signal.signal(signal.SIGTERM, _terminated)
    try:
        main(argv)
    except StepInterrupted as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)


def machine() -> str:
    """The benchmarks' machine line: processor, cores, Python."""
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def query_images(run: Any) -> list[str]:
    """The images a benchmark queries an embed run (retrieval.embed_run.EmbedRun) with: its test rows,
    or the first 100 rows of a collection without a test split."""
    test = [path for path, split in zip(run.paths, run.splits, strict=True) if split == "test"]
    return test or list(run.paths[:100])
