"""The embed run a server answers from, copied into memory at start.

EmbedRun memory-maps embeddings.npy and database.npy: a file rewritten in place under a running server
would change its answers (ids no longer matching rows), and a truncated one kill it with SIGBUS. A
server reads each once, checks it against the run's manifest after the copy (so what it serves is what
embed wrote), and never touches the files again. index.csv, transform.npz and index.faiss are read into
memory by EmbedRun and the index loader already.
"""

from __future__ import annotations

import numpy as np

from landmark_ae.retrieval.embed_run import DATABASE_FILE, REMAKE, EmbedRun, resolve_embed_run
from landmark_ae.runs import check_artifacts


class ServedRun(EmbedRun):
    """An EmbedRun whose arrays live in memory, not in memory-mapped files."""

    @classmethod
    def into_memory(cls, run: EmbedRun) -> ServedRun:
        served = cls.__new__(cls)
        served.__dict__.update(vars(run))
        served.embeddings = np.array(run.embeddings)  # a copy, off the file
        check_artifacts(run.run_dir, ["embeddings.npy"], REMAKE)  # unchanged while it was copied
        return served

    def database_rows(self) -> np.ndarray:
        rows = super().database_rows()
        if isinstance(rows, np.memmap):  # database.npy, after DBA
            rows = np.array(rows)
            check_artifacts(self.run_dir, [DATABASE_FILE], REMAKE)
        return rows


def load_served_run(given: str | None, output_dir: str) -> ServedRun:
    """The embed run `given` (or the latest complete one), checked against its manifest, in memory."""
    return ServedRun.into_memory(resolve_embed_run(given, output_dir))
