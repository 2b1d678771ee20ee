"""Built-in synthetic landmark dataset, written in Google Landmarks v2's own formats.

Each landmark is a procedurally drawn scene (ground, distant background, one main
structure such as a dome, tower, gate, bridge or temple, and a few secondary
buildings) with its own palette, roof shapes and window pattern.  Each image is a
different "photo" of it: a random resized crop with a small camera roll, a sky that
depends on the weather / time of day, white-balance, exposure and contrast jitter,
sensor noise and sometimes a foreground occluder (tree, people, car, lamp post).
Image counts per landmark are long-tailed (Zipf-like), as in GLDv2.

Layout written into ``out_dir``::

    synthetic.json                 the spec (written first)
    images/<a>/<b>/<c>/<id>.jpg    RGB JPEGs, a, b, c = first three chars of the id
    landmarks.csv                  landmark_id,name
    train.csv                      id,url,landmark_id  (written last: it marks completion)

``url`` points at ``http://127.0.0.1:8000/<a>/<b>/<c>/<id>.jpg`` so that
``python -m http.server --directory <out_dir>/images`` serves the images.

Only numpy and Pillow are used.  Every random draw comes from
``numpy.random.default_rng`` seeded from ``(spec.seed, stream, landmark[, image])``,
so output is byte-identical for a given spec and does not depend on the order in
which images are made.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SyntheticSpec", "generate", "GENERATOR_VERSION"]

#: Bumped whenever the images a given spec produces change.
GENERATOR_VERSION = 1

_MAX_SIDE = 1024
_CANVAS_SCALE = 4  # the landmark's base scene is drawn at 4x the output size
_VIEW_SCALE = 2  # views are rendered at 2x, then box-reduced (anti-aliasing)
_URL_PREFIX = "http://127.0.0.1:8000"

# RNG stream tags: default_rng([seed, tag, ...]).
_S_RECIPE, _S_VIEW, _S_COUNTS, _S_ID, _S_DRAW, _S_NOISE = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate.  ``generate`` validates it (``validate()`` does so up front)."""

    n_landmarks: int = 20
    n_images: int = 1500
    min_per_landmark: int = 3
    width: int = 160
    height: int = 120
    first_landmark_id: int = 1000
    seed: int = 0
    jpeg_quality: int = 90

    def validate(self) -> None:
        """Raise ValueError with a one-line message if the spec cannot be generated."""
        _validate(self)


def _validate(spec: SyntheticSpec) -> None:
    for f in fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"synthetic spec: {f.name} must be an integer, got {value!r}")
    if spec.n_landmarks < 2:
        raise ValueError(f"synthetic spec: n_landmarks must be at least 2, got {spec.n_landmarks}")
    if spec.min_per_landmark < 1:
        raise ValueError(
            f"synthetic spec: min_per_landmark must be at least 1, got {spec.min_per_landmark}"
        )
    need = spec.n_landmarks * spec.min_per_landmark
    if spec.n_images < need:
        raise ValueError(
            f"synthetic spec: n_images={spec.n_images} is less than n_landmarks * min_per_landmark"
            f" = {spec.n_landmarks} * {spec.min_per_landmark} = {need}"
        )
    for name in ("width", "height"):
        v = getattr(spec, name)
        if not 32 <= v <= _MAX_SIDE:
            raise ValueError(f"synthetic spec: {name} must be in [32, {_MAX_SIDE}], got {v}")
    if spec.first_landmark_id < 0:
        raise ValueError(
            f"synthetic spec: first_landmark_id must be >= 0, got {spec.first_landmark_id}"
        )
    if spec.seed < 0:
        raise ValueError(f"synthetic spec: seed must be >= 0, got {spec.seed}")
    if not 1 <= spec.jpeg_quality <= 100:
        raise ValueError(
            f"synthetic spec: jpeg_quality must be in [1, 100], got {spec.jpeg_quality}"
        )


# --------------------------------------------------------------------------------------
# Landmark recipes
# --------------------------------------------------------------------------------------

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
    "dome",
    "tower",
    "gate",
    "bridge",
    "temple",
    "pyramid",
    "lighthouse",
    "skyscraper",
    "hall",
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

# Weather / time of day of a view: sky top, sky at horizon, cloudiness, cloud colour,
# white-balance gains, exposure, contrast, saturation.
_SKIES = (
    (
        "clear",
        (62, 118, 196),
        (176, 206, 234),
        0.3,
        (250, 250, 252),
        (1.0, 1.0, 1.0),
        1.0,
        1.05,
        1.05,
    ),
    (
        "hazy",
        (128, 160, 196),
        (214, 220, 226),
        0.3,
        (240, 240, 242),
        (1.0, 1.0, 1.0),
        1.05,
        0.85,
        0.85,
    ),
    (
        "overcast",
        (140, 146, 154),
        (196, 199, 203),
        0.9,
        (214, 216, 220),
        (0.97, 1.0, 1.04),
        0.88,
        0.8,
        0.7,
    ),
    (
        "golden",
        (84, 112, 178),
        (246, 186, 118),
        0.35,
        (252, 214, 170),
        (1.12, 1.0, 0.84),
        1.0,
        1.05,
        1.1,
    ),
    (
        "dusk",
        (38, 46, 104),
        (226, 122, 104),
        0.3,
        (200, 120, 130),
        (1.06, 0.9, 0.96),
        0.62,
        1.0,
        0.95,
    ),
)


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


# --------------------------------------------------------------------------------------
# Drawing the base scene of a landmark
# --------------------------------------------------------------------------------------


class _Painter:
    """Draws on a premultiplied RGB layer and its alpha mask together."""

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.rgb = Image.new("RGB", (w, h), (0, 0, 0))
        self.alpha = Image.new("L", (w, h), 0)
        self._d = ImageDraw.Draw(self.rgb)
        self._a = ImageDraw.Draw(self.alpha)

    def poly(self, pts, col: Colour) -> None:
        pts = [(float(x), float(y)) for x, y in pts]
        self._d.polygon(pts, fill=col)
        self._a.polygon(pts, fill=255)

    def rect(self, x0, y0, x1, y1, col: Colour) -> None:
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        self._d.rectangle(box, fill=col)
        self._a.rectangle(box, fill=255)

    def ellipse(self, x0, y0, x1, y1, col: Colour) -> None:
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        self._d.ellipse(box, fill=col)
        self._a.ellipse(box, fill=255)

    def chord(self, x0, y0, x1, y1, start, end, col: Colour) -> None:
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        self._d.chord(box, start, end, fill=col)
        self._a.chord(box, start, end, fill=255)

    def line(self, pts, col: Colour, width: float) -> None:
        pts = [(float(x), float(y)) for x, y in pts]
        w = max(1, int(round(width)))
        self._d.line(pts, fill=col, width=w)
        self._a.line(pts, fill=255, width=w)


def _shade(c: Colour, f: float) -> Colour:
    return tuple(int(np.clip(v * f, 0, 255)) for v in c)  # type: ignore[return-value]


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


@dataclass
class _Style:
    wall: Colour
    accent: Colour
    roof: Colour
    window: Colour
    win_kind: str
    sx: float  # window spacing, px
    sy: float
    fw: float  # window size as a fraction of its cell
    fh: float
    light: int  # +1: light from the left (shaded side faces on the right)
    roof_kind: str
    top_kind: str


def _windows(p: _Painter, x0, y0, x1, y1, st: _Style) -> None:
    w, h = x1 - x0, y1 - y0
    if w < st.sx * 0.8 or h < st.sy * 0.8:
        return
    nc = max(1, int(w / st.sx))
    nr = max(1, int(h / st.sy))
    cw, rh = w / nc, h / nr
    ww, wh = cw * st.fw, rh * st.fh
    col = st.window
    if st.win_kind == "band":
        for r in range(nr):
            y = y0 + r * rh + (rh - wh) / 2
            p.rect(x0 + cw * 0.25, y, x1 - cw * 0.25, y + wh * 0.55, col)
        return
    for r in range(nr):
        cy = y0 + (r + 0.5) * rh
        for c in range(nc):
            cx = x0 + (c + 0.5) * cw
            if st.win_kind == "rect":
                p.rect(cx - ww / 2, cy - wh / 2, cx + ww / 2, cy + wh / 2, col)
            elif st.win_kind == "arch":
                p.rect(cx - ww / 2, cy - wh / 2 + ww / 2, cx + ww / 2, cy + wh / 2, col)
                p.ellipse(cx - ww / 2, cy - wh / 2, cx + ww / 2, cy - wh / 2 + ww, col)
            elif st.win_kind == "round":
                m = min(ww, wh) / 2
                p.ellipse(cx - m, cy - m, cx + m, cy + m, col)
            else:  # slit
                p.rect(cx - ww * 0.18, cy - wh / 2, cx + ww * 0.18, cy + wh / 2, col)


def _box(p: _Painter, x0, y0, x1, y1, col: Colour, st: _Style, depth: float) -> None:
    """A facade with a shaded side face (simple oblique projection)."""
    if depth > 0:
        dy = depth * 0.45
        side = _shade(col, 0.68)
        if st.light > 0:
            p.poly([(x1, y0), (x1 + depth, y0 - dy), (x1 + depth, y1 - dy), (x1, y1)], side)
        else:
            p.poly([(x0, y0), (x0 - depth, y0 - dy), (x0 - depth, y1 - dy), (x0, y1)], side)
    p.rect(x0, y0, x1, y1, col)


def _roof(p: _Painter, x0, y0, x1, st: _Style, kind: str, h: float) -> float:
    """Draw a roof sitting on y0 over [x0, x1]; returns the top y."""
    w = x1 - x0
    cx = (x0 + x1) / 2
    if kind == "gable":
        top = y0 - h * 0.3
        p.poly([(x0 - w * 0.04, y0), (cx, top), (x1 + w * 0.04, y0)], st.roof)
        return top
    if kind == "mansard":
        top = y0 - h * 0.16
        p.poly(
            [(x0 - w * 0.02, y0), (x0 + w * 0.1, top), (x1 - w * 0.1, top), (x1 + w * 0.02, y0)],
            st.roof,
        )
        return top
    if kind == "stepped":
        top = y0
        for k in range(3):
            inset = w * (0.12 + 0.12 * k)
            p.rect(x0 + inset, top - h * 0.06, x1 - inset, top, st.wall if k % 2 else st.accent)
            top -= h * 0.06
        return top
    if kind == "battlement":
        n = max(3, int(w / (h * 0.08 + 1)) | 1)
        bw = w / n
        for k in range(0, n, 2):
            p.rect(x0 + k * bw, y0 - h * 0.07, x0 + (k + 1) * bw, y0, st.wall)
        return y0 - h * 0.07
    # flat with cornice
    p.rect(x0 - w * 0.03, y0 - h * 0.045, x1 + w * 0.03, y0, st.accent)
    return y0 - h * 0.045


def _spire(p: _Painter, cx, y0, w, h, col: Colour) -> None:
    p.poly([(cx - w / 2, y0), (cx, y0 - h), (cx + w / 2, y0)], col)


def _onion(p: _Painter, cx, y0, w, h, col: Colour) -> None:
    pts = []
    for t in np.linspace(0.0, 1.0, 24):
        # bulb profile: wide near the bottom third, pointed top
        r = w / 2 * math.sin(math.pi * min(1.0, t * 1.35)) ** 0.8 * (1 - t) ** 0.35
        pts.append((cx + r, y0 - t * h))
    pts += [(2 * cx - x, y) for x, y in reversed(pts)]
    p.poly(pts, col)


def _dome(p: _Painter, cx, y0, w, h, col: Colour, st: _Style) -> float:
    p.chord(cx - w / 2, y0 - h, cx + w / 2, y0 + h, 180, 360, col)
    # light-side highlight and ribs
    hl = _shade(col, 1.25)
    off = -w * 0.18 * st.light
    p.chord(cx - w * 0.28 + off, y0 - h * 0.85, cx + w * 0.28 + off, y0 + h * 0.7, 200, 340, hl)
    for k in (-2, -1, 1, 2):
        xr = cx + k * w / 7
        p.line([(xr, y0), (cx + k * w / 14, y0 - h * 0.92)], _shade(col, 0.75), max(1.0, w * 0.012))
    return y0 - h


def _structure(p: _Painter, kind: str, cx, yb, w, h, st: _Style, rng, ground_col: Colour) -> None:
    depth = w * 0.12
    if kind == "hall":
        x0, x1, y0 = cx - w / 2, cx + w / 2, yb - h
        _box(p, x0, y0, x1, yb, st.wall, st, depth)
        _roof(p, x0, y0, x1, st, st.roof_kind, h)
        p.rect(x0, y0, x1, y0 + h * 0.05, st.accent)
        _windows(p, x0 + w * 0.06, y0 + h * 0.1, x1 - w * 0.06, yb - h * 0.22, st)
        dw = min(w * 0.14, h * 0.22)
        p.rect(cx - dw / 2, yb - h * 0.18, cx + dw / 2, yb, _shade(st.window, 0.8))
        p.ellipse(
            cx - dw / 2,
            yb - h * 0.18 - dw / 2,
            cx + dw / 2,
            yb - h * 0.18 + dw / 2,
            _shade(st.window, 0.8),
        )
    elif kind == "tower":
        x0, x1, y0 = cx - w / 2, cx + w / 2, yb - h * 0.8
        _box(p, x0, y0, x1, yb, st.wall, st, depth)
        for k in range(1, 4):
            yy = yb - h * 0.8 * k / 4
            p.rect(x0 - w * 0.03, yy - h * 0.012, x1 + w * 0.03, yy + h * 0.012, st.accent)
        _windows(p, x0 + w * 0.15, y0 + h * 0.06, x1 - w * 0.15, yb - h * 0.1, st)
        top = st.top_kind
        if top == "spire":
            _spire(p, cx, y0, w * 1.05, h * 0.3, st.roof)
        elif top == "onion":
            _onion(p, cx, y0, w * 1.1, h * 0.22, st.roof)
            p.line([(cx, y0 - h * 0.22), (cx, y0 - h * 0.3)], st.accent, w * 0.05)
        elif top == "clock":
            p.rect(x0, y0 - h * 0.14, x1, y0, st.wall)
            r = w * 0.32
            p.ellipse(cx - r, y0 - h * 0.07 - r, cx + r, y0 - h * 0.07 + r, st.accent)
            p.line([(cx, y0 - h * 0.07), (cx, y0 - h * 0.07 - r * 0.8)], st.window, r * 0.12)
            p.line([(cx, y0 - h * 0.07), (cx + r * 0.55, y0 - h * 0.07)], st.window, r * 0.12)
            _spire(p, cx, y0 - h * 0.14, w * 1.1, h * 0.08, st.roof)
        else:
            _roof(p, x0, y0, x1, st, "battlement", h)
    elif kind == "dome":
        bh = h * 0.35
        x0, x1 = cx - w / 2, cx + w / 2
        _box(p, x0, yb - bh, x1, yb, st.wall, st, depth)
        _windows(p, x0 + w * 0.05, yb - bh * 0.85, x1 - w * 0.05, yb - bh * 0.15, st)
        dw = w * 0.62
        dh = h * 0.2
        p.rect(cx - dw / 2, yb - bh - dh, cx + dw / 2, yb - bh, _shade(st.wall, 1.08))
        ncol = 8
        for k in range(ncol + 1):
            xx = cx - dw / 2 + k * dw / ncol
            p.line([(xx, yb - bh - dh), (xx, yb - bh)], _shade(st.wall, 0.7), max(1.0, dw * 0.02))
        p.rect(
            cx - dw / 2 - w * 0.02,
            yb - bh - dh - h * 0.02,
            cx + dw / 2 + w * 0.02,
            yb - bh - dh,
            st.accent,
        )
        top = _dome(p, cx, yb - bh - dh - h * 0.02, dw * 1.02, h * 0.3, st.roof, st)
        p.rect(cx - dw * 0.07, top - h * 0.07, cx + dw * 0.07, top + h * 0.01, st.accent)
        _spire(p, cx, top - h * 0.07, dw * 0.1, h * 0.06, st.roof)
    elif kind == "gate":
        x0, x1, y0 = cx - w / 2, cx + w / 2, yb - h
        _box(p, x0, y0, x1, yb, st.wall, st, depth)
        p.rect(x0 - w * 0.03, y0, x1 + w * 0.03, y0 + h * 0.16, st.accent)
        p.rect(x0, y0 + h * 0.16, x1, y0 + h * 0.19, _shade(st.wall, 0.8))
        ow = w * 0.36
        oh = h * 0.58
        hole = _mix(ground_col, (40, 40, 44), 0.5)
        p.rect(cx - ow / 2, yb - oh + ow / 2, cx + ow / 2, yb, hole)
        p.ellipse(cx - ow / 2, yb - oh, cx + ow / 2, yb - oh + ow, hole)
        for s in (-1, 1):
            sx = cx + s * w * 0.34
            sw, sh = w * 0.13, h * 0.32
            p.rect(sx - sw / 2, yb - sh + sw / 2, sx + sw / 2, yb, hole)
            p.ellipse(sx - sw / 2, yb - sh, sx + sw / 2, yb - sh + sw, hole)
            for c in (-1, 1):
                px_ = cx + s * w * 0.21 + c * w * 0.035
                p.rect(px_ - w * 0.012, y0 + h * 0.22, px_ + w * 0.012, yb, st.accent)
        if st.top_kind in ("spire", "onion"):
            p.poly(
                [
                    (cx - w * 0.12, y0),
                    (cx - w * 0.08, y0 - h * 0.12),
                    (cx + w * 0.08, y0 - h * 0.12),
                    (cx + w * 0.12, y0),
                ],
                st.roof,
            )
    elif kind == "bridge":
        x0, x1 = cx - w / 2, cx + w / 2
        deck = yb - h * 0.35
        th = h * 0.07
        p.rect(x0, deck - th, x1, deck, st.wall)
        p.rect(x0, deck - th - h * 0.02, x1, deck - th, st.accent)
        n = int(rng.integers(3, 7))
        span = w / n
        hole = _mix(ground_col, (20, 24, 30), 0.45)
        p.rect(x0, deck, x1, yb, st.wall)
        for k in range(n):
            ax = x0 + (k + 0.5) * span
            aw = span * 0.78
            p.chord(
                ax - aw / 2, deck + h * 0.05, ax + aw / 2, yb + (yb - deck) * 0.9, 180, 360, hole
            )
            p.rect(ax - aw / 2, deck + h * 0.05 + (yb - deck) * 0.9, ax + aw / 2, yb, hole)
        if st.top_kind in ("spire", "clock", "onion"):  # two towers
            for s in (-1, 1):
                tx = cx + s * w * 0.22
                tw = w * 0.07
                _box(p, tx - tw / 2, yb - h, tx + tw / 2, deck, st.wall, st, tw * 0.2)
                _windows(p, tx - tw * 0.35, yb - h * 0.9, tx + tw * 0.35, deck - th * 1.5, st)
                _spire(p, tx, yb - h, tw * 1.2, h * 0.18, st.roof)
            p.rect(cx - w * 0.22, yb - h * 0.75, cx + w * 0.22, yb - h * 0.7, st.accent)
        else:  # suspension cables
            for s in (-1, 1):
                tx = cx + s * w * 0.25
                p.rect(tx - w * 0.012, yb - h * 0.95, tx + w * 0.012, deck, st.accent)
            xs = np.linspace(cx - w * 0.25, cx + w * 0.25, 21)
            ys = deck - th - (h * 0.95 - h * 0.35 - th) * ((xs - cx) / (w * 0.25)) ** 2
            p.line(list(zip(xs, ys, strict=True)), st.accent, max(1.0, h * 0.012))
            for xe, s in ((x0, -1), (x1, 1)):
                p.line(
                    [(cx + s * w * 0.25, yb - h * 0.95), (xe, deck - th)],
                    st.accent,
                    max(1.0, h * 0.012),
                )
    elif kind == "temple":
        x0, x1 = cx - w / 2, cx + w / 2
        sh = h * 0.05
        for k in range(3):
            p.rect(
                x0 - w * 0.03 * (3 - k),
                yb - sh * (k + 1),
                x1 + w * 0.03 * (3 - k),
                yb - sh * k,
                _shade(st.accent, 1 - 0.06 * k),
            )
        ctop = yb - h * 0.72
        p.rect(x0, ctop, x1, yb - sh * 3, _shade(st.wall, 0.45))
        n = int(rng.integers(6, 11))
        cwid = w / (n * 1.7)
        for k in range(n):
            xx = x0 + cwid / 2 + k * (w - cwid) / (n - 1)
            p.rect(xx - cwid / 2, ctop, xx + cwid / 2, yb - sh * 3, st.wall)
        p.rect(x0 - w * 0.02, ctop - h * 0.1, x1 + w * 0.02, ctop, st.accent)
        p.poly(
            [
                (x0 - w * 0.03, ctop - h * 0.1),
                (cx, ctop - h * 0.28),
                (x1 + w * 0.03, ctop - h * 0.1),
            ],
            st.roof,
        )
        p.poly(
            [
                (x0 + w * 0.08, ctop - h * 0.115),
                (cx, ctop - h * 0.25),
                (x1 - w * 0.08, ctop - h * 0.115),
            ],
            _shade(st.roof, 1.2),
        )
    elif kind == "pyramid":
        if st.roof_kind in ("stepped", "battlement", "flat"):  # ziggurat
            n = int(rng.integers(4, 8))
            for k in range(n):
                ww = w * (1 - k / (n + 1))
                y1 = yb - h * k / n
                _box(
                    p,
                    cx - ww / 2,
                    y1 - h / n,
                    cx + ww / 2,
                    y1,
                    st.wall if k % 2 == 0 else _shade(st.wall, 0.9),
                    st,
                    0,
                )
                p.rect(cx - ww / 2, y1 - h / n, cx + ww / 2, y1 - h / n * 0.85, st.accent)
            p.rect(cx - w * 0.05, yb - h * 0.98, cx + w * 0.05, yb, _shade(st.accent, 0.95))
        else:
            lit, dark = _shade(st.wall, 1.1), _shade(st.wall, 0.65)
            apex = (cx + w * 0.08 * st.light, yb - h)
            p.poly(
                [(cx - w / 2, yb), apex, (cx + w * 0.12 * st.light, yb)],
                lit if st.light > 0 else dark,
            )
            p.poly(
                [(cx + w * 0.12 * st.light, yb), apex, (cx + w / 2, yb)],
                dark if st.light > 0 else lit,
            )
            for k in range(1, 6):
                t = k / 6
                p.line(
                    [
                        (cx - w / 2 * (1 - t) + (apex[0] - cx) * t, yb - h * t),
                        (cx + w / 2 * (1 - t) + (apex[0] - cx) * t, yb - h * t),
                    ],
                    _shade(st.wall, 0.8),
                    max(1.0, h * 0.006),
                )
    elif kind == "lighthouse":
        wb, wt = w, w * 0.6
        y0 = yb - h * 0.78
        nb = int(rng.integers(3, 6))
        for k in range(nb):
            t0, t1 = k / nb, (k + 1) / nb
            ya, yb_ = yb - (yb - y0) * t0, yb - (yb - y0) * t1
            wa, wb_ = wb + (wt - wb) * t0, wb + (wt - wb) * t1
            p.poly(
                [(cx - wa / 2, ya), (cx - wb_ / 2, yb_), (cx + wb_ / 2, yb_), (cx + wa / 2, ya)],
                st.wall if k % 2 == 0 else st.accent,
            )
        p.rect(cx - wt * 0.75, y0 - h * 0.025, cx + wt * 0.75, y0, _shade(st.roof, 0.8))
        p.rect(cx - wt * 0.4, y0 - h * 0.12, cx + wt * 0.4, y0 - h * 0.025, (250, 236, 170))
        for k in (-1, 0, 1):
            p.line(
                [(cx + k * wt * 0.2, y0 - h * 0.12), (cx + k * wt * 0.2, y0 - h * 0.025)],
                st.roof,
                max(1.0, wt * 0.04),
            )
        _spire(p, cx, y0 - h * 0.12, wt * 1.0, h * 0.1, st.roof)
    elif kind == "skyscraper":
        nsec = int(rng.integers(1, 4))
        y = yb
        ww = w
        for k in range(nsec):
            sh = h * (0.62 if nsec == 1 else (0.5, 0.3, 0.15)[k] if nsec == 3 else (0.6, 0.3)[k])
            _box(p, cx - ww / 2, y - sh, cx + ww / 2, y, st.wall, st, ww * 0.1)
            _windows(
                p,
                cx - ww / 2 + ww * 0.06,
                y - sh + sh * 0.03,
                cx + ww / 2 - ww * 0.06,
                y - sh * 0.03,
                st,
            )
            y -= sh
            ww *= 0.72
        if st.top_kind in ("spire", "clock"):
            p.line([(cx, y), (cx, y - h * 0.14)], st.accent, max(1.0, w * 0.03))
        else:
            _roof(p, cx - ww / 1.44, y, cx + ww / 1.44, st, "flat", h)
    else:  # pragma: no cover - recipes only use the kinds above
        raise AssertionError(kind)


def _draw_base(spec: SyntheticSpec, lm: _Landmark) -> tuple[Image.Image, float]:
    """The landmark's base scene: (RGBA image, horizon y in px).

    Sky is left transparent (alpha 0) and filled in per view."""
    rng = _rng(spec, _S_DRAW, lm.index)
    cw, ch = spec.width * _CANVAS_SCALE, spec.height * _CANVAS_SCALE
    p = _Painter(cw, ch)
    wall, accent, roof, window = lm.palette
    horizon = ch * rng.uniform(0.6, 0.72)

    # distant background, hazy
    bg = str(rng.choice(["hills", "treeline", "skyline", "none", "hills"]))
    haze = (170, 182, 196)
    if bg == "hills":
        col = _mix(_jitter(rng, (86, 110, 90), 15), haze, 0.45)
        xs = np.linspace(0, cw, 40)
        walk = np.cumsum(rng.normal(0, 1, xs.size))
        walk = (walk - walk.min()) / (np.ptp(walk) + 1e-9)
        ys = horizon - ch * (0.03 + rng.uniform(0.06, 0.16) * walk)
        p.poly([(0, horizon + 2)] + list(zip(xs, ys, strict=True)) + [(cw, horizon + 2)], col)
    elif bg == "treeline":
        col = _mix(_jitter(rng, (52, 84, 50), 10), haze, 0.3)
        for _ in range(int(cw / (ch * 0.03))):
            x = rng.uniform(0, cw)
            r = ch * rng.uniform(0.02, 0.05)
            p.ellipse(
                x - r,
                horizon - r * 1.6,
                x + r,
                horizon + r * 0.4,
                _shade(col, rng.uniform(0.85, 1.1)),
            )
    elif bg == "skyline":
        col = _mix(_jitter(rng, (120, 124, 134), 12), haze, 0.5)
        x = 0.0
        while x < cw:
            bw = ch * rng.uniform(0.03, 0.09)
            p.rect(
                x,
                horizon - ch * rng.uniform(0.03, 0.15),
                x + bw,
                horizon + 2,
                _shade(col, rng.uniform(0.9, 1.08)),
            )
            x += bw * rng.uniform(0.8, 1.3)

    # ground with a texture that depends on its type
    g = lm.ground_colour
    p.rect(0, horizon, cw, ch, g)
    vx = cw * rng.uniform(0.35, 0.65)
    if lm.ground == "plaza":
        line = _shade(g, 0.82)
        for k in range(-14, 15):
            p.line([(vx, horizon), (vx + k * cw * 0.12, ch * 1.5)], line, max(1.0, ch * 0.003))
        y, step = horizon + ch * 0.01, ch * 0.008
        while y < ch:
            p.line([(0, y), (cw, y)], line, max(1.0, ch * 0.003))
            step *= 1.35
            y += step
    elif lm.ground == "road":
        p.rect(0, horizon, cw, horizon + ch * 0.02, _shade(g, 1.25))  # far pavement
        for k in range(12):
            t0, t1 = k / 12, (k + 0.5) / 12
            y0, y1 = horizon + (ch - horizon) * t0**2, horizon + (ch - horizon) * t1**2
            hw0, hw1 = ch * 0.002 + t0**2 * ch * 0.02, ch * 0.002 + t1**2 * ch * 0.02
            p.poly(
                [(vx - hw0, y0), (vx + hw0, y0), (vx + hw1, y1), (vx - hw1, y1)], (232, 226, 200)
            )
    elif lm.ground in ("grass", "sand"):
        for _ in range(160):
            x, y = rng.uniform(0, cw), rng.uniform(horizon, ch)
            r = ch * 0.004 * (1 + 6 * (y - horizon) / (ch - horizon))
            p.ellipse(x - r * 3, y - r, x + r * 3, y + r, _shade(g, rng.uniform(0.82, 1.15)))

    # landmark style, shared by all its structures
    style = _Style(
        wall=wall,
        accent=accent,
        roof=roof,
        window=window,
        win_kind=str(rng.choice(["rect", "arch", "round", "band", "slit"])),
        sx=ch * rng.uniform(0.02, 0.04),
        sy=ch * rng.uniform(0.03, 0.055),
        fw=rng.uniform(0.4, 0.65),
        fh=rng.uniform(0.45, 0.7),
        light=int(rng.choice([-1, 1])),
        roof_kind=str(rng.choice(["flat", "gable", "mansard", "stepped", "battlement"])),
        top_kind=str(rng.choice(["spire", "onion", "clock", "battlement"])),
    )

    # secondary buildings on either side, behind the main one
    n_sec = int(rng.integers(1, 4))
    slots = rng.permutation([0.14, 0.27, 0.73, 0.86])[:n_sec]
    for u in sorted(slots, key=lambda v: abs(v - 0.5), reverse=True):
        kind = str(rng.choice(_SECONDARY_TYPES))
        sec = _Style(**{**style.__dict__})
        sec.wall = _mix(wall, _jitter(rng, (200, 196, 188), 30), rng.uniform(0.2, 0.6))
        sec.roof_kind = str(rng.choice(["flat", "gable", "mansard"]))
        h = ch * rng.uniform(0.12, 0.3) * (1.6 if kind in ("tower", "skyscraper") else 1.0)
        w = cw * rng.uniform(0.06, 0.12) * (0.5 if kind == "tower" else 1.0)
        _structure(p, kind, cw * u, horizon + ch * 0.005, w, h, sec, rng, g)

    # the main structure
    size = {
        "dome": (0.26, 0.46),
        "tower": (0.07, 0.5),
        "gate": (0.2, 0.36),
        "bridge": (0.7, 0.3),
        "temple": (0.28, 0.34),
        "pyramid": (0.34, 0.36),
        "lighthouse": (0.08, 0.48),
        "skyscraper": (0.1, 0.56),
        "hall": (0.34, 0.28),
    }[lm.main]
    w = cw * size[0] * rng.uniform(0.85, 1.15)
    h = ch * size[1] * rng.uniform(0.85, 1.15)
    cx = cw * rng.uniform(0.45, 0.55)
    _structure(p, lm.main, cx, horizon + ch * 0.01, w, h, style, rng, g)
    if lm.main in ("tower", "lighthouse", "skyscraper"):  # a companion so the view is not empty
        _structure(
            p,
            "hall",
            cx + w * 1.6 * style.light,
            horizon + ch * 0.012,
            cw * 0.15,
            ch * 0.14,
            style,
            rng,
            g,
        )

    # water: mirror what stands above the horizon, with ripples
    if lm.ground == "water":
        rgb = np.asarray(p.rgb, dtype=np.float32)
        a = np.asarray(p.alpha, dtype=np.float32)[..., None] / 255.0
        hy = int(horizon)
        n = ch - hy
        src_rgb = rgb[max(0, hy - n) : hy][::-1]
        src_a = a[max(0, hy - n) : hy][::-1]
        m = src_rgb.shape[0]
        water = np.array(g, np.float32)
        refl = water * (1 - 0.55 * src_a) + src_rgb * 0.55 * 0.8
        out = rgb.copy()
        out[hy : hy + m] = refl
        # ripples: horizontal lighter/darker streaks
        ys = np.arange(hy, ch)
        rip = 1.0 + 0.08 * np.sin((ys - hy) ** 0.7 * 3.1)[:, None, None]
        out[hy:] *= rip
        al = np.asarray(p.alpha).copy()
        al[hy:] = 255
        rgb_img, alpha_img = (
            Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8)),
            Image.fromarray(al),
        )
    else:
        rgb_img, alpha_img = p.rgb, p.alpha
    # ImageDraw does not anti-alias, so alpha is 0/255 and RGB is both straight and premultiplied
    return Image.merge("RGBA", (*rgb_img.split(), alpha_img)), float(horizon)


# --------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------


def _sky(rng, ow: int, oh: int, y_top: float, y_hor: float, cond) -> Image.Image:
    _, top, hor, cloudy, cloud_col, *_ = cond
    top = np.array(top, np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    hor = np.array(hor, np.float32) * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    ys = np.arange(oh, dtype=np.float32)
    t = np.clip((ys - y_top) / max(1.0, y_hor - y_top), 0.0, 1.0) ** 0.8
    grad = top[None, :] * (1 - t[:, None]) + hor[None, :] * t[:, None]  # (oh, 3)
    column = Image.fromarray(np.clip(grad + 0.5, 0, 255).astype(np.uint8)[:, None, :])
    sky = column.resize((ow, oh), Image.Resampling.NEAREST)
    n = int(rng.poisson(cloudy * 8))
    if n:
        sw, sh = max(4, ow // 8), max(4, oh // 8)
        mask = Image.new("L", (sw, sh), 0)
        d = ImageDraw.Draw(mask)
        for _ in range(n):
            x, y = rng.uniform(-0.1, 1.1) * sw, rng.uniform(-0.1, 0.6) * sh
            for _ in range(int(rng.integers(2, 6))):
                rx, ry = rng.uniform(0.06, 0.2) * sw, rng.uniform(0.03, 0.09) * sh
                ox, oy = rng.normal(0, rx), rng.normal(0, ry * 0.5)
                d.ellipse(
                    [x + ox - rx, y + oy - ry, x + ox + rx, y + oy + ry],
                    fill=int(rng.integers(120, 230)),
                )
        cloud = _shade(cloud_col, rng.uniform(0.85, 1.05))
        sky.paste(cloud, (0, 0, ow, oh), mask.resize((ow, oh), Image.Resampling.BILINEAR))
    return sky


def _occluders(rng, img: Image.Image) -> None:
    ow, oh = img.size
    d = ImageDraw.Draw(img)
    kinds = ["tree", "people", "car", "lamp", "branch"]
    for _ in range(1 if rng.random() < 0.75 else 2):
        kind = str(rng.choice(kinds, p=[0.3, 0.25, 0.2, 0.1, 0.15]))
        if kind == "tree":
            x = ow * (rng.uniform(-0.05, 0.25) if rng.random() < 0.5 else rng.uniform(0.75, 1.05))
            h = oh * rng.uniform(0.45, 0.95)
            tw = oh * rng.uniform(0.02, 0.05)
            d.rectangle(
                [x - tw / 2, oh - h * 0.55, x + tw / 2, oh], fill=_jitter(rng, (84, 60, 40), 10)
            )
            leaf = _jitter(rng, (54, 92, 46), 18)
            cy = oh - h * 0.7
            r = h * 0.28
            for _ in range(int(rng.integers(5, 10))):
                rx, ry = r * rng.uniform(0.5, 1.0), r * rng.uniform(0.45, 0.9)
                ox, oy = rng.normal(0, r * 0.45), rng.normal(0, r * 0.35)
                d.ellipse(
                    [x + ox - rx, cy + oy - ry, x + ox + rx, cy + oy + ry],
                    fill=_shade(leaf, rng.uniform(0.8, 1.2)),
                )
        elif kind == "people":
            for _ in range(int(rng.integers(1, 5))):
                h = oh * rng.uniform(0.12, 0.32)
                x = ow * rng.uniform(0.05, 0.95)
                yb = oh * rng.uniform(0.92, 1.08)
                bw = h * 0.26
                shirt = tuple(int(v) for v in rng.integers(20, 235, 3))
                legs = _jitter(rng, (50, 52, 70), 15)
                d.rectangle([x - bw * 0.4, yb - h * 0.48, x - bw * 0.05, yb], fill=legs)
                d.rectangle([x + bw * 0.05, yb - h * 0.48, x + bw * 0.4, yb], fill=legs)
                d.rounded_rectangle(
                    [x - bw / 2, yb - h * 0.84, x + bw / 2, yb - h * 0.44],
                    radius=bw * 0.2,
                    fill=shirt,
                )
                hr = h * 0.085
                skin = _jitter(rng, (200, 160, 130), 30)
                d.ellipse([x - hr, yb - h - hr * 0.2, x + hr, yb - h + hr * 1.8], fill=skin)
        elif kind == "car":
            w = ow * rng.uniform(0.28, 0.5)
            x = ow * rng.uniform(0.0, 1.0) - w / 2
            yb = oh * rng.uniform(0.96, 1.06)
            h = w * 0.3
            body = tuple(int(v) for v in rng.integers(15, 240, 3))
            glass = (40, 52, 64)
            d.polygon(
                [
                    (x + w * 0.22, yb - h * 0.55),
                    (x + w * 0.32, yb - h),
                    (x + w * 0.7, yb - h),
                    (x + w * 0.82, yb - h * 0.55),
                ],
                fill=body,
            )
            d.polygon(
                [
                    (x + w * 0.27, yb - h * 0.58),
                    (x + w * 0.34, yb - h * 0.92),
                    (x + w * 0.68, yb - h * 0.92),
                    (x + w * 0.77, yb - h * 0.58),
                ],
                fill=glass,
            )
            d.rounded_rectangle([x, yb - h * 0.6, x + w, yb - h * 0.15], radius=h * 0.12, fill=body)
            for wx in (0.2, 0.8):
                r = h * 0.2
                d.ellipse(
                    [x + w * wx - r, yb - h * 0.2 - r, x + w * wx + r, yb - h * 0.2 + r],
                    fill=(22, 22, 24),
                )
        elif kind == "lamp":
            x = ow * rng.uniform(0.05, 0.95)
            h = oh * rng.uniform(0.6, 1.0)
            col = _jitter(rng, (40, 44, 46), 8)
            d.rectangle([x - oh * 0.008, oh - h, x + oh * 0.008, oh], fill=col)
            d.rectangle([x - oh * 0.03, oh - h - oh * 0.05, x + oh * 0.03, oh - h], fill=col)
            d.rectangle(
                [x - oh * 0.02, oh - h - oh * 0.04, x + oh * 0.02, oh - h - oh * 0.01],
                fill=(236, 230, 190),
            )
        else:  # foliage hanging from a top corner
            left = rng.random() < 0.5
            x0 = 0 if left else ow
            leaf = _jitter(rng, (46, 80, 40), 15)
            for _ in range(int(rng.integers(6, 14))):
                x = x0 + (1 if left else -1) * abs(rng.normal(0, ow * 0.15))
                y = abs(rng.normal(0, oh * 0.12))
                r = oh * rng.uniform(0.04, 0.1)
                d.ellipse(
                    [x - r, y - r * 0.8, x + r, y + r * 0.8],
                    fill=_shade(leaf, rng.uniform(0.7, 1.2)),
                )


@dataclass(frozen=True)
class _Shared:
    """Per-spec arrays reused by every view."""

    r2: np.ndarray  # (H, W) squared distance from the centre / 2, for vignetting
    noise: np.ndarray  # (2H, 2W, 3) standard normal; each view takes a random window

    @staticmethod
    def make(spec: SyntheticSpec) -> _Shared:
        yy, xx = np.ogrid[-1 : 1 : complex(0, spec.height), -1 : 1 : complex(0, spec.width)]
        r2 = ((xx**2 + yy**2) / 2).astype(np.float32)
        noise = _rng(spec, _S_NOISE).standard_normal(
            (2 * spec.height, 2 * spec.width, 3), dtype=np.float32
        )
        return _Shared(r2, noise)


def _render_view(spec: SyntheticSpec, lm: _Landmark, base, k: int, shared: _Shared) -> bytes:
    base_rgba, horizon = base
    rng = _rng(spec, _S_VIEW, lm.index, k)
    cw, ch = base_rgba.size
    ow, oh = spec.width * _VIEW_SCALE, spec.height * _VIEW_SCALE

    # camera: crop window (log-uniform scale), small roll, horizon placement
    s = math.exp(rng.uniform(math.log(0.3), math.log(0.9)))
    win_w = cw * s
    win_h = win_w * (oh / ow) * math.exp(rng.uniform(-0.08, 0.08))
    theta = math.radians(float(np.clip(rng.normal(0, 3.0), -8, 8)))
    c, sn = math.cos(theta), math.sin(theta)
    ex = win_w / 2 * abs(c) + win_h / 2 * abs(sn)
    ey = win_w / 2 * abs(sn) + win_h / 2 * abs(c)
    # off-centre views, but the middle of the scene (the main structure) stays in view
    cx = cw * (0.5 + float(np.clip(rng.normal(0, 0.14), -0.45 * s, 0.45 * s)))
    f = rng.uniform(0.45, 0.9)  # where the horizon falls in the view, from the top
    cy = horizon - (f - 0.5) * win_h
    cx = float(np.clip(cx, ex, cw - ex))
    cy = float(np.clip(cy, ey, ch - ey))
    a, b = c * win_w / ow, -sn * win_h / oh
    d_, e = sn * win_w / ow, c * win_h / oh
    coeffs = (a, b, cx - a * ow / 2 - b * oh / 2, d_, e, cy - d_ * ow / 2 - e * oh / 2)
    # nearest at 2x, then a 2x2 box reduce: fast and anti-aliased enough
    view = base_rgba.transform((ow, oh), Image.Transform.AFFINE, coeffs, Image.Resampling.NEAREST)

    # weather / time of day: partly a property of the landmark's climate
    weights = np.array(lm.sky_weights) * 0.2 + 0.8 / len(_SKIES)
    cond = _SKIES[int(rng.choice(len(_SKIES), p=weights / weights.sum()))]
    y_top = (0 - cy) / win_h * oh + oh / 2
    y_hor = (horizon - cy) / win_h * oh + oh / 2
    img = _sky(rng, ow, oh, y_top, y_hor, cond)
    img.paste(view, (0, 0), view)

    if rng.random() < 0.5:
        _occluders(rng, img)
    img = img.reduce(_VIEW_SCALE)

    # photometric: white balance, saturation, contrast and exposure as one colour
    # matrix (applied by Pillow), gamma as a lookup table, then vignette and noise
    _, _, _, _, _, wb, expo, contrast, sat = cond
    gains = np.asarray(wb) * np.exp(rng.normal(0, 0.05, 3))
    sat_ = sat * rng.uniform(0.8, 1.2)
    con = contrast * rng.uniform(0.8, 1.2)
    exposure = expo * math.exp(rng.normal(0, 0.3))
    sg = (sat_ * np.eye(3) + (1 - sat_) / 3) @ np.diag(gains)
    mean_rgb = (
        np.asarray(img.resize((4, 3), Image.Resampling.BOX), dtype=np.float64)
        .reshape(-1, 3)
        .mean(axis=0)
    )
    mean = float((sg @ mean_rgb).mean())
    mat = np.concatenate(
        [exposure * con * sg, np.full((3, 1), exposure * (1 - con) * mean)], axis=1
    )
    img = img.convert("RGB", tuple(float(v) for v in mat.ravel()))
    gamma = rng.uniform(0.85, 1.18)
    lut = ((np.arange(256) / 255.0) ** gamma * 255.0).astype(np.float32)
    x = lut[np.asarray(img)].astype(np.float32)
    if rng.random() < 0.4:
        x = x * (1.0 - np.float32(rng.uniform(0.15, 0.4)) * shared.r2)[..., None]
    sigma = np.float32(rng.uniform(1.0, 6.5))
    oy = int(rng.integers(0, spec.height + 1))
    ox = int(rng.integers(0, spec.width + 1))
    x = x + shared.noise[oy : oy + spec.height, ox : ox + spec.width] * sigma
    out = Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=int(spec.jpeg_quality))
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _tmp_name(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}.tmp")


def _remove_stale_tmp(path: Path) -> None:
    """Delete what a killed run left while writing ``path``."""
    for stale in path.parent.glob(_tmp_name(path, "*").name):
        stale.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = _tmp_name(path, str(os.getpid()))
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _csv_bytes(header: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _meta(spec: SyntheticSpec) -> dict:
    return {
        "generator": "landmark_ae.data.sources.synthetic",
        "version": GENERATOR_VERSION,
        "spec": {k: int(v) for k, v in asdict(spec).items()},
    }


def _meta_bytes(spec: SyntheticSpec) -> bytes:
    return (json.dumps(_meta(spec), indent=2, sort_keys=True) + "\n").encode("utf-8")


def generate(
    out_dir: Path | str,
    spec: SyntheticSpec = SyntheticSpec(),
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the dataset into out_dir (created if needed) and return the path of train.csv.

    ``progress(done, total)`` is called once per image, in order, images already on disk
    included; nothing is printed.  Every file is written to a temporary name in its own
    folder and renamed; ``train.csv`` comes last, so its presence means the set is
    complete.  Idempotent: if the folder already holds this spec's complete dataset it
    returns at once (no progress calls); after an interrupted run it makes only the
    missing images.  Raises ValueError for an invalid spec, a folder whose
    synthetic.json records a different spec, or a train.csv without synthetic.json."""
    _validate(spec)
    out = Path(out_dir)
    train_csv = out / "train.csv"
    meta_path = out / "synthetic.json"
    if meta_path.exists():
        try:
            existing = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            existing = None
        if existing != _meta(spec):
            theirs = existing.get("spec") if isinstance(existing, dict) else None
            raise ValueError(
                f"{out} holds a different synthetic dataset ({meta_path.name}: {theirs}); "
                f"use another folder or delete it"
            )
        if train_csv.exists():
            return train_csv
    elif train_csv.exists():
        raise ValueError(
            f"{out} already has a train.csv that the synthetic generator did not write "
            f"(no synthetic.json); use another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    images = out / "images"
    images.mkdir(exist_ok=True)
    resuming = meta_path.exists()
    if not resuming:
        _remove_stale_tmp(meta_path)
        _atomic_write(meta_path, _meta_bytes(spec))

    landmarks = _landmarks(spec)
    counts = _counts(spec)
    total = sum(counts)
    seen: set[str] = set()
    made_dirs: set[Path] = set()
    shared: _Shared | None = None
    rows: list[list] = []
    done = 0
    for lm, n in zip(landmarks, counts, strict=True):
        base = None
        landmark_id = spec.first_landmark_id + lm.index
        for k in range(n):
            attempt = 0
            image_id = _image_id(spec, lm.index, k)
            while image_id in seen:  # 64-bit ids: practically never
                attempt += 1
                image_id = _image_id(spec, lm.index, k, attempt)
            seen.add(image_id)
            a, b, c = image_id[0], image_id[1], image_id[2]
            rows.append([image_id, f"{_URL_PREFIX}/{a}/{b}/{c}/{image_id}.jpg", landmark_id])
            path = images / a / b / c / f"{image_id}.jpg"
            if not path.exists():
                if base is None:
                    base = _draw_base(spec, lm)
                if shared is None:
                    shared = _Shared.make(spec)
                if path.parent not in made_dirs:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made_dirs.add(path.parent)
                if resuming:
                    _remove_stale_tmp(path)
                _atomic_write(path, _render_view(spec, lm, base, k, shared))
            done += 1
            if progress is not None:
                progress(done, total)

    rows.sort(key=lambda r: r[0])
    for name in ("landmarks.csv", "train.csv"):
        _remove_stale_tmp(out / name)
    _atomic_write(
        out / "landmarks.csv",
        _csv_bytes(
            ["landmark_id", "name"],
            [[spec.first_landmark_id + lm.index, lm.name] for lm in landmarks],
        ),
    )
    _atomic_write(train_csv, _csv_bytes(["id", "url", "landmark_id"], rows))
    return train_csv

