"""A landmark's base scene: distant background, textured ground, secondary buildings, the main
structure and, over water, its reflection.  Drawn once per landmark at ``_CANVAS_SCALE`` times
the output size; every view of the landmark is a crop of it.

All draws come from one generator per landmark, in the order the steps run in ``_draw_base``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from .painter import _mix, _Painter, _shade, _Style
from .recipes import _S_DRAW, _SECONDARY_TYPES, Colour, _jitter, _Landmark, _rng
from .spec import SyntheticSpec
from .structures import _structure

_CANVAS_SCALE = 4  # the landmark's base scene is drawn at 4x the output size

# main structure kind: (width, height) as fractions of the canvas
_MAIN_SIZE = {
    "dome": (0.26, 0.46),
    "tower": (0.07, 0.5),
    "gate": (0.2, 0.36),
    "bridge": (0.7, 0.3),
    "temple": (0.28, 0.34),
    "pyramid": (0.34, 0.36),
    "lighthouse": (0.08, 0.48),
    "skyscraper": (0.1, 0.56),
    "hall": (0.34, 0.28),
}


def _draw_base(spec: SyntheticSpec, lm: _Landmark) -> tuple[Image.Image, float]:
    """The landmark's base scene: (RGBA image, horizon y in px).

    Sky is left transparent (alpha 0) and filled in per view."""
    rng = _rng(spec, _S_DRAW, lm.index)
    cw, ch = spec.width * _CANVAS_SCALE, spec.height * _CANVAS_SCALE
    p = _Painter(cw, ch)
    horizon = ch * rng.uniform(0.6, 0.72)
    _background(p, rng, horizon)
    _ground(p, rng, lm, horizon)
    style = _style(rng, lm, ch)
    _buildings(p, rng, lm, style, horizon)
    if lm.ground == "water":
        rgb_img, alpha_img = _reflect(p, lm.ground_colour, horizon)
    else:
        rgb_img, alpha_img = p.rgb, p.alpha
    # ImageDraw does not anti-alias, so alpha is 0/255 and RGB is both straight and premultiplied
    return Image.merge("RGBA", (*rgb_img.split(), alpha_img)), float(horizon)


def _background(p: _Painter, rng: np.random.Generator, horizon: float) -> None:
    """Distant, hazy hills, trees or skyline along the horizon (or nothing)."""
    cw, ch = p.w, p.h
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


def _ground(p: _Painter, rng: np.random.Generator, lm: _Landmark, horizon: float) -> None:
    """The ground below the horizon, with a texture that depends on its type."""
    cw, ch = p.w, p.h
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


def _style(rng: np.random.Generator, lm: _Landmark, ch: int) -> _Style:
    """The landmark's style, shared by all its structures."""
    wall, accent, roof, window = lm.palette
    return _Style(
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


def _buildings(
    p: _Painter, rng: np.random.Generator, lm: _Landmark, style: _Style, horizon: float
) -> None:
    """Secondary buildings, then the main structure (and a companion beside a slender one)."""
    cw, ch = p.w, p.h
    g = lm.ground_colour
    # secondary buildings on either side, behind the main one
    n_sec = int(rng.integers(1, 4))
    slots = rng.permutation([0.14, 0.27, 0.73, 0.86])[:n_sec]
    for u in sorted(slots, key=lambda v: abs(v - 0.5), reverse=True):
        kind = str(rng.choice(_SECONDARY_TYPES))
        sec = dataclasses.replace(style)
        sec.wall = _mix(style.wall, _jitter(rng, (200, 196, 188), 30), rng.uniform(0.2, 0.6))
        sec.roof_kind = str(rng.choice(["flat", "gable", "mansard"]))
        h = ch * rng.uniform(0.12, 0.3) * (1.6 if kind in ("tower", "skyscraper") else 1.0)
        w = cw * rng.uniform(0.06, 0.12) * (0.5 if kind == "tower" else 1.0)
        _structure(p, kind, cw * u, horizon + ch * 0.005, w, h, sec, rng, g)

    # the main structure
    size = _MAIN_SIZE[lm.main]
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


def _reflect(p: _Painter, g: Colour, horizon: float) -> tuple[Image.Image, Image.Image]:
    """Water: mirror what stands above the horizon, with ripples; returns (RGB, alpha)."""
    ch = p.h
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
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8)), Image.fromarray(al)
