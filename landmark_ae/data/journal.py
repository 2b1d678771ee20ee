"""prepare's journal: what a prepare run has done, appended as it goes, so a rerun (resume=) skips it.

    done.log                  id,width,height of each stored image (its original size)
    permanent_failures.log    id<TAB>reason<TAB>detail of failures a rerun does not fetch again (http, tar)

Both are append-only and flushed as they grow; a torn last line (a run killed mid-append) is ignored.
"""

from __future__ import annotations

import os
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landmark_ae.data.images import ImageError
from landmark_ae.data.splits import ID_PATTERN

DONE_JOURNAL = "done.log"
PERMANENT_JOURNAL = "permanent_failures.log"

if TYPE_CHECKING:
    import pandas as pd


def read_journal(path: Path) -> dict[str, tuple[int, int]]:
    """Finished images from done.log; a torn last line (killed mid-append) is ignored."""
    done: dict[str, tuple[int, int]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split(",")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                done[parts[0]] = (int(parts[1]), int(parts[2]))
    return done


def read_permanent(path: Path) -> dict[str, tuple[str, str]]:
    """id -> (reason, detail) of failures that a rerun does not fetch again; torn lines ignored."""
    out: dict[str, tuple[str, str]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and ID_PATTERN.match(parts[0]):
                out[parts[0]] = (parts[1], parts[2])
    return out


class Journal:
    """What prepare has done in a run dir, appended as it goes so that a rerun skips it: done.log (id,
    width, height of each stored image) and, where the source has permanent failure reasons,
    permanent_failures.log (id, reason, detail: rows a rerun reports again but does not fetch again).
    Also this run's failures (failures.csv's rows) and their reasons (the progress line's count)."""

    def __init__(self, run_dir: Path, permanent: frozenset[str] = frozenset()):
        self.run_dir, self.permanent = run_dir, permanent
        self.done = read_journal(run_dir / DONE_JOURNAL)
        self.known_bad = read_permanent(run_dir / PERMANENT_JOURNAL) if permanent else {}
        self.stored: dict[str, tuple[int, int]] = {}  # by this run: id -> original (width, height)
        self.failures: list[dict] = []
        self.reasons: Counter = Counter()  # of the failures met by this run's fetch and decode
        self._files = ExitStack()

    def __enter__(self) -> Journal:
        self._done_log = self._files.enter_context(open(self.run_dir / DONE_JOURNAL, "a", encoding="utf-8"))
        bad_path = self.run_dir / PERMANENT_JOURNAL if self.permanent else os.devnull
        self._bad_log = self._files.enter_context(open(bad_path, "a", encoding="utf-8"))
        return self

    def __exit__(self, *exc: object) -> None:
        self._files.close()

    def todo(self, rows: pd.DataFrame) -> list:
        """The rows still to fetch: not finished (journaled, with the file still there), not known to
        fail for good; a row whose id is not safe in a path, or known to fail, is listed as a failure."""
        todo = []
        for r in rows.itertuples(index=False):
            if not ID_PATTERN.match(str(r.id)):  # never build a path from an unchecked id
                self.listed(r, "invalid_id")
            elif r.id in self.done and (self.run_dir / r.split / f"{r.id}.jpg").is_file():
                continue
            elif r.id in self.known_bad and self.known_bad[r.id][0] in self.permanent:
                self.listed(r, *self.known_bad[r.id])
            else:
                todo.append(r)
        return todo

    def listed(self, row: Any, reason: str, detail: str = "") -> None:
        """A failure for failures.csv only (known before any fetch: not counted, not journaled again)."""
        self.failures.append({"id": row.id, "landmark_id": row.landmark_id, "split": row.split,
                              "reason": reason, "detail": detail[:200]})

    def failed(self, row: Any, exc: ImageError) -> None:
        """A fetch or decode that failed now: listed, counted, and journaled when a rerun should not retry it."""
        self.listed(row, exc.reason, exc.detail)
        self.reasons[exc.reason] += 1
        if exc.reason in self.permanent:
            self._bad_log.write(f"{row.id}\t{exc.reason}\t{exc.detail[:200].replace(chr(9), ' ').replace(chr(10), ' ')}\n")
            self._bad_log.flush()

    def record(self, outcomes: list[tuple[Any, tuple[int, int] | ImageError]]) -> None:
        """A decoded batch: each stored image into done.log (one flush per batch), each failure as failed()."""
        for row, outcome in outcomes:
            if isinstance(outcome, ImageError):
                self.failed(row, outcome)
            else:
                self.stored[row.id] = self.done[row.id] = outcome
                self._done_log.write(f"{row.id},{outcome[0]},{outcome[1]}\n")
        self._done_log.flush()

    def status(self) -> str:
        """The progress line's note: failures so far and their commonest reasons."""
        if not self.reasons:
            return ""
        common = ", ".join(f"{k} {v}" for k, v in self.reasons.most_common(4))
        return f"{sum(self.reasons.values())} failed ({common})"
