"""What commands write on stdout: one escaping rule for text in TSV, and a stdout whose reader left.

TSV text fields (`query`'s paths and ids; any command's TSV may use `tsv_field`) follow PostgreSQL's
COPY text format: a backslash is written `\\\\`, a tab `\\t`, a newline `\\n`, a carriage return `\\r`,
and a byte of a file name that is not UTF-8 (Python's surrogateescape) or a NUL `\\xNN` (two hex
digits). So every row has exactly its columns, one per line, and `cut -f`/`awk -F'\\t'` work on any
path. Undo it with PostgreSQL's COPY, or in Python with `codecs.escape_decode(field.encode())[0]`
(the bytes of the field; `os.fsdecode` them for a path).

A reader that stops early (`landmark-ae query ... | head -1`) is no error: `guard_stdout` turns the
BrokenPipeError of the next write into `StdoutClosed`, a BaseException (so that no `except
Exception` on the way, Hydra's included, reports it), and points stdout at /dev/null so that
Python's own flush at exit cannot fail again; `landmark_ae.cli` then exits 141, as `yes | head -1`
does, with no message. Stdlib only: the dispatcher imports it before anything else.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

__all__ = ["StdoutClosed", "guard_stdout", "printable", "tsv_field"]

# Lone surrogates (undecodable bytes of a file name, via surrogateescape) and NUL; with controls=True
# also the other C0 controls and DEL, so that a message naming a path stays one line.
_UNPRINTABLE = re.compile("[\x00\ud800-\udfff]")
_UNPRINTABLE_OR_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_TSV_SPECIAL = re.compile("[\\\\\t\n\r\x00\ud800-\udfff]")
_TSV_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _hex_escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: Any, controls: bool = False) -> str:
    """`text` as something any UTF-8 file can hold: the bytes of a file name that are not UTF-8, and
    NUL, as `\\xNN`; everything else unchanged (how a path is recorded: index.csv, failures.csv).
    controls=True: every control character too (tab, newline, ...), for a one-line message."""
    pattern = _UNPRINTABLE_OR_CONTROL if controls else _UNPRINTABLE
    return pattern.sub(lambda m: _hex_escape(m.group()), str(text))


def tsv_field(value: Any) -> str:
    """One TSV text field by the rule above ("" for None)."""
    if value is None:
        return ""
    return _TSV_SPECIAL.sub(lambda m: _TSV_ESCAPES.get(m.group()) or _hex_escape(m.group()), str(value))


class StdoutClosed(BaseException):
    """Whoever read stdout has gone (a closed pipe): stop quietly, as coreutils do."""


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null: what is still buffered, and Python's flush at exit, go nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ else 1)
        os.close(devnull)
    except (OSError, ValueError):
        pass


class _GuardedStdout:
    """sys.stdout, with a closed pipe raised as StdoutClosed (see the module docstring)."""

    def __init__(self, stream: Any):
        self._stream = stream

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._stream, name)(*args)
        except BrokenPipeError:
            _silence_stdout()
            raise StdoutClosed() from None

    def write(self, text: str) -> int:
        return self._call("write", text)

    def writelines(self, lines: Any) -> None:
        self._call("writelines", lines)

    def flush(self) -> None:
        self._call("flush")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_stdout() -> None:
    """Install the guard on sys.stdout (once)."""
    if not isinstance(sys.stdout, _GuardedStdout) and sys.stdout is not None:
        sys.stdout = _GuardedStdout(sys.stdout)  # type: ignore[assignment]
