"""stderr output (landmark_ae/ui.py): tables are never cut to 80 columns where output is not a terminal."""

from __future__ import annotations

import io

from rich.table import Table

from landmark_ae.ui import make_console


def test_a_wide_table_on_a_pipe_or_log_file_is_not_truncated():
    table = Table(*(f"metric_number_{i}" for i in range(10)))
    table.add_row(*(f"0.{i}23456" for i in range(10)))
    out = io.StringIO()  # not a terminal, like `make demo 2> log` or a CI log
    make_console(out).print(table)
    text = out.getvalue()
    assert "…" not in text and all(f"0.{i}23456" in text for i in range(10))
