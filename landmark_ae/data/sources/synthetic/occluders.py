"""Foreground occluders drawn over some views: trees, people, cars, lamp posts, branches."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .painter import _shade
from .recipes import _jitter


def _tree(rng: np.random.Generator, d: ImageDraw.ImageDraw, ow: int, oh: int) -> None:
    """A tree near the left or right edge: trunk and a crown of leafy blobs."""
    x = ow * (rng.uniform(-0.05, 0.25) if rng.random() < 0.5 else rng.uniform(0.75, 1.05))
    h = oh * rng.uniform(0.45, 0.95)
    tw = oh * rng.uniform(0.02, 0.05)
    d.rectangle([x - tw / 2, oh - h * 0.55, x + tw / 2, oh], fill=_jitter(rng, (84, 60, 40), 10))
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


def _people(rng: np.random.Generator, d: ImageDraw.ImageDraw, ow: int, oh: int) -> None:
    """One to four people standing near the bottom edge."""
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


def _car(rng: np.random.Generator, d: ImageDraw.ImageDraw, ow: int, oh: int) -> None:
    """A car in the foreground, seen from the side."""
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


def _lamp(rng: np.random.Generator, d: ImageDraw.ImageDraw, ow: int, oh: int) -> None:
    """A lamp post."""
    x = ow * rng.uniform(0.05, 0.95)
    h = oh * rng.uniform(0.6, 1.0)
    col = _jitter(rng, (40, 44, 46), 8)
    d.rectangle([x - oh * 0.008, oh - h, x + oh * 0.008, oh], fill=col)
    d.rectangle([x - oh * 0.03, oh - h - oh * 0.05, x + oh * 0.03, oh - h], fill=col)
    d.rectangle(
        [x - oh * 0.02, oh - h - oh * 0.04, x + oh * 0.02, oh - h - oh * 0.01],
        fill=(236, 230, 190),
    )


def _branch(rng: np.random.Generator, d: ImageDraw.ImageDraw, ow: int, oh: int) -> None:
    """Foliage hanging from a top corner."""
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


_OCCLUDERS = {"tree": _tree, "people": _people, "car": _car, "lamp": _lamp, "branch": _branch}


def _occluders(rng: np.random.Generator, img: Image.Image) -> None:
    """One occluder, sometimes two, drawn straight onto the view."""
    ow, oh = img.size
    d = ImageDraw.Draw(img)
    kinds = ["tree", "people", "car", "lamp", "branch"]
    for _ in range(1 if rng.random() < 0.75 else 2):
        kind = str(rng.choice(kinds, p=[0.3, 0.25, 0.2, 0.1, 0.15]))
        _OCCLUDERS[kind](rng, d, ow, oh)
