"""Progress bars and tables on stderr (stdout is reserved for results)."""

from __future__ import annotations

import sys
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Where output is not a terminal (a log file, a pipe) rich would assume 80 columns and cut table
# cells to "0.17…"; there, tables get all the width they need instead.
NON_TERMINAL_WIDTH = 240


def make_console(file: IO[str]) -> Console:
    return Console(file=file, width=None if file.isatty() else NON_TERMINAL_WIDTH)


# stderr=True: rich looks sys.stderr up when it writes (it may be replaced, e.g. by pytest).
console = Console(stderr=True, width=None if sys.stderr.isatty() else NON_TERMINAL_WIDTH)


def progress_bar(enabled: bool = True, *extra_columns) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not enabled,
        transient=False,
    )
