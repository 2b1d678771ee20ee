"""One module per subcommand, each a @hydra.main; this module holds what they share.

Importing it registers the config schemas and the `run_dir` resolver before Hydra composes.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from landmark_ae.runs import read_run_record
from landmark_ae.config import config_dir, register_configs, validate
from landmark_ae.commands import hydra_errors
from landmark_ae.errors import UserError

CONFIG_DIR = config_dir()
log = logging.getLogger("landmark_ae")

register_configs()
# `resume=<run dir>` reuses that dir; otherwise a new timestamped one (see conf/hydra/default.yaml).
OmegaConf.register_new_resolver(
    "run_dir", lambda resume, fresh: str(resume) if resume else fresh, replace=True
)
# A resumed run keeps the original .hydra/ record and adds its own beside it.
OmegaConf.register_new_resolver(
    "hydra_subdir",
    lambda resume: f".hydra/resume-{datetime.now():%Y-%m-%d_%H-%M-%S-%f}" if resume else ".hydra",
    replace=True,
)


hydra_errors.install()


def fail(command: str, message: str, code: int = 2) -> None:
    print(f"landmark-ae {command}: error: {message}", file=sys.stderr)
    sys.exit(code)


def execute(command: str, cfg: DictConfig, schema: type, body: str) -> None:
    """Validate cfg, run body(cfg, run_dir) and print its results as `key<TAB>value` lines on stdout.

    body is "module:function", imported only after validation: a bad value is reported before
    torch is even imported.

    Expected failures become one line on stderr and exit code 2; a run dir that this call created
    and that holds nothing yet is removed so a typo leaves no debris.
    """
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # Only a dir this call created may be removed on error; never one named by resume=.
    fresh = not cfg.get("resume") and read_run_record(run_dir) is None
    try:
        validate(cfg, schema)
        module, function = body.split(":")
        results = getattr(importlib.import_module(module), function)(cfg, run_dir)
    except (UserError, MissingMandatoryValue) as exc:
        if fresh and read_run_record(run_dir) is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(exc, MissingMandatoryValue):
            key = exc.full_key or "a required value"
            fail(command, f"{key} is required: set it on the command line ({key}=...)")
        fail(command, str(exc))
    except KeyboardInterrupt:
        fail(command, f"interrupted; finished work is kept: continue with resume={run_dir}", code=130)
    for key, value in (results or {}).items():
        print(f"{key}\t{value}", flush=True)
