"""What every layer shares, with no heavy import (no torch, numpy, pandas or Hydra): the split names,
which torchrun rank this process is, the run-dir stamp and where runs go by default.
"""

from __future__ import annotations

import os

# The prepared dataset's splits, in the order they are written and read.
SPLITS = ("train", "val", "test")
# A new run dir's timestamp (conf/hydra: outputs/<command>/<stamp>/), to the microsecond.
RUN_STAMP_FORMAT = "%Y-%m-%d_%H-%M-%S-%f"
# Where runs go unless LANDMARK_AE_OUTPUTS or paths.output_dir says otherwise (conf/paths/default.yaml).
OUTPUTS_ENV = "LANDMARK_AE_OUTPUTS"
DEFAULT_OUTPUTS = "outputs"


def default_output_dir() -> str:
    """The outputs dir a command uses when paths.output_dir is not given: $LANDMARK_AE_OUTPUTS or ./outputs."""
    return os.environ.get(OUTPUTS_ENV) or DEFAULT_OUTPUTS


def world_size() -> int:
    """How many ranks torchrun (or a launcher setting the same variables) started; 1 without one."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    """This process's rank under torchrun; 0 without it."""
    if world_size() <= 1:
        return 0
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def launched_by_torchrun() -> bool:
    """Whether this process is one of several ranks started by torchrun."""
    return world_size() > 1


def secondary_rank() -> bool:
    """A torchrun rank other than 0: it computes but writes nothing (rank 0 keeps the run's files)."""
    return rank() > 0
