"""What to generate: ``SyntheticSpec`` and its checks.

The defaults, and the ranges the Hydra config shares with the generator, live in one place:
``landmark_ae.config.SyntheticConfig``.  The spec copies them from there and adds only what the
generator alone takes (first_landmark_id, jpeg_quality) plus the one rule across fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from landmark_ae.config import SyntheticConfig

_SCHEMA = {f.name: f for f in dataclasses.fields(SyntheticConfig)}


def _from_schema(name: str, ranged: bool = True) -> Any:
    """A field with SyntheticConfig's default for `name` and, if `ranged`, its min/max."""
    f = _SCHEMA[name]
    return field(default=f.default, metadata=dict(f.metadata) if ranged else {})


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate.  ``generate`` validates it (``validate()`` does so up front)."""

    n_landmarks: int = _from_schema("n_landmarks")
    # The schema's floor for n_images is the config's; the generator needs only
    # n_landmarks * min_per_landmark images, which _validate checks.
    n_images: int = _from_schema("n_images", ranged=False)
    min_per_landmark: int = _from_schema("min_per_landmark")
    width: int = _from_schema("width")
    height: int = _from_schema("height")
    first_landmark_id: int = field(default=1000, metadata={"min": 0})
    seed: int = _from_schema("seed")
    jpeg_quality: int = field(default=90, metadata={"min": 1, "max": 100})

    def validate(self) -> None:
        """Raise ValueError with a one-line message if the spec cannot be generated."""
        _validate(self)


def _validate(spec: SyntheticSpec) -> None:
    # Called from Python too (not only through the Hydra config), so it checks everything.
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            # ValueError, not TypeError: callers catch ValueError for any bad spec
            raise ValueError(f"synthetic spec: {f.name} must be an integer, got {value!r}")
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if lo is not None and hi is not None and not lo <= value <= hi:
            raise ValueError(f"synthetic spec: {f.name} must be in [{lo}, {hi}], got {value}")
        if lo is not None and value < lo:
            raise ValueError(f"synthetic spec: {f.name} must be at least {lo}, got {value}")
    need = spec.n_landmarks * spec.min_per_landmark
    if spec.n_images < need:
        raise ValueError(
            f"synthetic spec: n_images={spec.n_images} is less than n_landmarks * min_per_landmark"
            f" = {spec.n_landmarks} * {spec.min_per_landmark} = {need}"
        )
