"""Landmark recipes: palettes, main-structure and ground types, skies, and the per-spec draws
(each landmark's recipe, image counts per landmark, image ids).

Every random draw in the generator comes from ``_rng(spec, stream, ...)``: a generator seeded
from the spec's seed, a stream tag and the landmark (and image), so any image can be made on
its own, in any order, with the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .spec import SyntheticSpec

# RNG stream tags: default_rng([seed, tag, ...]).
_S_RECIPE, _S_VIEW, _S_COUNTS, _S_ID, _S_DRAW, _S_NOISE = 0, 1, 2, 3, 4, 5

Colour = tuple[int, int, int]

# name: wall, accent, roof, window.  Fewer palettes than landmarks, so some share one.
_PALETTES: dict[str, tuple[Colour, Colour, Colour, Colour]] = {
    "crimson": ((168, 46, 50), (232, 204, 172), (92, 32, 36), (44, 32, 36)),
    "ivory": ((232, 224, 204), (186, 164, 124), (112, 124, 138), (58, 68, 84)),
    "golden": ((214, 170, 82), (250, 226, 152), (156, 108, 40), (70, 50, 30)),
    "slate": ((112, 122, 136), (176, 184, 194), (58, 64, 74), (30, 36, 46)),
    "jade": ((72, 140, 114), (204, 222, 204), (36, 90, 70), (24, 44, 40)),
    "azure": ((202, 216, 232), (52, 102, 172), (40, 80, 150), (36, 60, 100)),
    "ochre": ((196, 130, 72), (240, 212, 162), (128, 70, 40), (62, 40, 30)),
    "onyx": ((56, 56, 64), (202, 172, 92), (30, 30, 36), (150, 160, 176)),
    "rose": ((220, 162, 160), (250, 236, 226), (150, 80, 90), (80, 50, 60)),
    "copper": ((182, 150, 118), (92, 166, 140), (80, 160, 134), (50, 44, 40)),
    "sandstone": ((206, 182, 140), (160, 120, 80), (120, 90, 60), (70, 56, 40)),
    "cobalt": ((42, 62, 122), (222, 202, 122), (26, 36, 82), (198, 208, 228)),
}

_MAIN_TYPES = (
    "dome", "tower", "gate", "bridge", "temple", "pyramid", "lighthouse", "skyscraper", "hall",
)
_SECONDARY_TYPES = ("hall", "tower", "dome", "skyscraper", "hall", "tower")

# ground type: (base colour, name suffixes)
_GROUNDS: dict[str, tuple[Colour, tuple[str, ...]]] = {
    "grass": ((86, 128, 62), ("garden", "park", "meadow")),
    "plaza": ((168, 162, 150), ("plaza", "square", "court")),
    "water": ((58, 96, 124), ("harbour", "lake", "bay")),
    "sand": ((214, 192, 146), ("dunes", "oasis", "shore")),
    "road": ((96, 96, 100), ("boulevard", "avenue", "crossing")),
}


class _Sky(NamedTuple):
    """Weather / time of day of a view, and the photometric look that goes with it."""

    name: str
    top: Colour  # sky colour at the top
    horizon: Colour  # sky colour at the horizon
    cloudiness: float
    cloud: Colour
    white_balance: tuple[float, float, float]  # RGB gains
    exposure: float
    contrast: float
    saturation: float


# fmt: off
_SKIES = (
    _Sky("clear", (62, 118, 196), (176, 206, 234), 0.3, (250, 250, 252), (1.0, 1.0, 1.0), 1.0, 1.05, 1.05),
    _Sky("hazy", (128, 160, 196), (214, 220, 226), 0.3, (240, 240, 242), (1.0, 1.0, 1.0), 1.05, 0.85, 0.85),
    _Sky("overcast", (140, 146, 154), (196, 199, 203), 0.9, (214, 216, 220), (0.97, 1.0, 1.04), 0.88, 0.8, 0.7),
    _Sky("golden", (84, 112, 178), (246, 186, 118), 0.35, (252, 214, 170), (1.12, 1.0, 0.84), 1.0, 1.05, 1.1),
    _Sky("dusk", (38, 46, 104), (226, 122, 104), 0.3, (200, 120, 130), (1.06, 0.9, 0.96), 0.62, 1.0, 0.95),
)
# fmt: on


@dataclass(frozen=True)
class _Landmark:
    index: int
    name: str
    palette: tuple[Colour, Colour, Colour, Colour]
    main: str
    ground: str
    ground_colour: Colour
    sky_weights: tuple[float, ...]


def _rng(spec: SyntheticSpec, *tags: int) -> np.random.Generator:
    return np.random.default_rng([int(spec.seed), *[int(t) for t in tags]])


def _jitter(rng: np.random.Generator, c: Colour, amount: float) -> Colour:
    return tuple(int(np.clip(v + rng.normal(0.0, amount), 0, 255)) for v in c)  # type: ignore[return-value]


def _landmarks(spec: SyntheticSpec) -> list[_Landmark]:
    out: list[_Landmark] = []
    used: dict[str, int] = {}
    for i in range(spec.n_landmarks):
        rng = _rng(spec, _S_RECIPE, i)
        pal_name = str(rng.choice(list(_PALETTES)))
        wall, accent, roof, window = _PALETTES[pal_name]
        palette = (
            _jitter(rng, wall, 10),
            _jitter(rng, accent, 10),
            _jitter(rng, roof, 10),
            _jitter(rng, window, 6),
        )
        main = str(rng.choice(_MAIN_TYPES))
        ground = "water" if main == "bridge" else str(rng.choice(list(_GROUNDS)))
        base_colour, suffixes = _GROUNDS[ground]
        suffix = str(rng.choice(suffixes))
        sky_weights = tuple(float(w) for w in rng.dirichlet(np.full(len(_SKIES), 0.8)))
        name = f"{pal_name}-{main}-{suffix}"
        used[name] = used.get(name, 0) + 1
        if used[name] > 1:
            name = f"{name}-{used[name]}"
        out.append(
            _Landmark(i, name, palette, main, ground, _jitter(rng, base_colour, 10), sky_weights)
        )
    return out


def _counts(spec: SyntheticSpec) -> list[int]:
    """Images per landmark: min_per_landmark each plus a Zipf-like share of the rest."""
    rng = _rng(spec, _S_COUNTS)
    n = spec.n_landmarks
    rank = rng.permutation(n)
    weights = 1.0 / (rank + 1.0) ** 1.0 * np.exp(rng.normal(0.0, 0.15, n))
    extra = spec.n_images - n * spec.min_per_landmark
    share = extra * weights / weights.sum()
    counts = np.floor(share).astype(np.int64)
    # largest remainder, ties broken by index: deterministic
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: extra - int(counts.sum())]] += 1
    return [int(c) + spec.min_per_landmark for c in counts]


def _image_id(spec: SyntheticSpec, lm: int, k: int, attempt: int = 0) -> str:
    tags = (_S_ID, lm, k) if attempt == 0 else (_S_ID, lm, k, attempt)
    return _rng(spec, *tags).bytes(8).hex()
