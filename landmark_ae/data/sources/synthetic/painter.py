"""Drawing helpers for the landmark scenes: a painter that keeps colour and coverage together,
colour shading, a landmark's style, and the parts buildings are made of (facades, windows,
roofs, spires, onion and ribbed domes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .recipes import Colour


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
        w = max(1, round(width))
        self._d.line(pts, fill=col, width=w)
        self._a.line(pts, fill=255, width=w)


def _shade(c: Colour, f: float) -> Colour:
    return tuple(int(np.clip(v * f, 0, 255)) for v in c)  # type: ignore[return-value]


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    return tuple(round(x * (1 - t) + y * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


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
