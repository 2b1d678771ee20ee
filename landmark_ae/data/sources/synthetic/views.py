"""One view ("photo") of a landmark: a random crop of its base scene with a small camera roll,
a sky for the weather / time of day, sometimes an occluder, then white balance, exposure,
contrast and gamma jitter, vignetting and sensor noise; encoded as a JPEG.

Each view draws from its own generator, seeded from (seed, landmark, image index), so a view
does not depend on which other views are made.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .occluders import _occluders
from .painter import _shade
from .recipes import _S_NOISE, _S_VIEW, _SKIES, _Landmark, _rng, _Sky
from .spec import SyntheticSpec

_VIEW_SCALE = 2  # views are rendered at 2x, then box-reduced (anti-aliasing)


def _sky(
    rng: np.random.Generator, ow: int, oh: int, y_top: float, y_hor: float, cond: _Sky
) -> Image.Image:
    """An (ow, oh) sky: a vertical gradient from y_top to the horizon y_hor, maybe clouds."""
    top = np.array(cond.top, np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    hor = np.array(cond.horizon, np.float32) * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    ys = np.arange(oh, dtype=np.float32)
    t = np.clip((ys - y_top) / max(1.0, y_hor - y_top), 0.0, 1.0) ** 0.8
    grad = top[None, :] * (1 - t[:, None]) + hor[None, :] * t[:, None]  # (oh, 3)
    column = Image.fromarray(np.clip(grad + 0.5, 0, 255).astype(np.uint8)[:, None, :])
    sky = column.resize((ow, oh), Image.Resampling.NEAREST)
    n = int(rng.poisson(cond.cloudiness * 8))
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
        cloud = _shade(cond.cloud, rng.uniform(0.85, 1.05))
        sky.paste(cloud, (0, 0, ow, oh), mask.resize((ow, oh), Image.Resampling.BILINEAR))
    return sky


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
    """View k of landmark lm, as JPEG bytes; base is the landmark's (_draw_base) scene."""
    base_rgba, horizon = base
    rng = _rng(spec, _S_VIEW, lm.index, k)
    ow, oh = spec.width * _VIEW_SCALE, spec.height * _VIEW_SCALE
    view, y_top, y_hor = _camera(rng, base_rgba, horizon, ow, oh)

    # weather / time of day: partly a property of the landmark's climate
    weights = np.array(lm.sky_weights) * 0.2 + 0.8 / len(_SKIES)
    cond = _SKIES[int(rng.choice(len(_SKIES), p=weights / weights.sum()))]
    img = _sky(rng, ow, oh, y_top, y_hor, cond)
    img.paste(view, (0, 0), view)

    if rng.random() < 0.5:
        _occluders(rng, img)
    img = img.reduce(_VIEW_SCALE)

    x = _photometric(rng, img, cond, shared)
    sigma = np.float32(rng.uniform(1.0, 6.5))
    oy = int(rng.integers(0, spec.height + 1))
    ox = int(rng.integers(0, spec.width + 1))
    x = x + shared.noise[oy : oy + spec.height, ox : ox + spec.width] * sigma
    out = Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=int(spec.jpeg_quality))
    return buf.getvalue()


def _camera(
    rng: np.random.Generator, base_rgba: Image.Image, horizon: float, ow: int, oh: int
) -> tuple[Image.Image, float, float]:
    """Crop the base scene into an (ow, oh) view: (view, y of the scene's top, y of the horizon).

    Crop window with a log-uniform scale, a small roll, and the horizon placed at random."""
    cw, ch = base_rgba.size
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
    y_top = (0 - cy) / win_h * oh + oh / 2
    y_hor = (horizon - cy) / win_h * oh + oh / 2
    return view, y_top, y_hor


def _photometric(
    rng: np.random.Generator, img: Image.Image, cond: _Sky, shared: _Shared
) -> np.ndarray:
    """The view as float RGB after white balance, saturation, contrast, exposure, gamma and
    (sometimes) vignetting.

    The first four are one colour matrix (applied by Pillow), gamma is a lookup table."""
    gains = np.asarray(cond.white_balance) * np.exp(rng.normal(0, 0.05, 3))
    sat_ = cond.saturation * rng.uniform(0.8, 1.2)
    con = cond.contrast * rng.uniform(0.8, 1.2)
    exposure = cond.exposure * math.exp(rng.normal(0, 0.3))
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
    return x
