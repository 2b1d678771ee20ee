"""The structures a landmark is made of, one function per kind.

Each draws a structure standing on ``yb``, centred on ``cx``, about ``w`` wide and ``h`` tall,
in the style ``st``.  Some draw from ``rng`` (how many arches, columns, bands ...), so the order
of the draws below is part of the output: changing it changes every image.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .painter import (
    _box,
    _dome,
    _mix,
    _onion,
    _Painter,
    _roof,
    _shade,
    _spire,
    _Style,
    _windows,
)
from .recipes import Colour

_DEPTH = 0.12  # depth of a facade's shaded side face, as a fraction of its width


def _hall(p: _Painter, cx, yb, w, h, st: _Style, rng, ground_col: Colour) -> None:
    """A facade with a roof, a cornice, rows of windows and an arched door."""
    x0, x1, y0 = cx - w / 2, cx + w / 2, yb - h
    _box(p, x0, y0, x1, yb, st.wall, st, w * _DEPTH)
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


def _tower(p: _Painter, cx, yb, w, h, st: _Style, rng, ground_col: Colour) -> None:
    """A banded tower crowned by a spire, an onion dome, a clock or battlements."""
    x0, x1, y0 = cx - w / 2, cx + w / 2, yb - h * 0.8
    _box(p, x0, y0, x1, yb, st.wall, st, w * _DEPTH)
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


def _dome_building(p: _Painter, cx, yb, w, h, st: _Style, rng, ground_col: Colour) -> None:
    """A domed building: base with windows, colonnaded drum, ribbed dome and lantern."""
    bh = h * 0.35
    x0, x1 = cx - w / 2, cx + w / 2
    _box(p, x0, yb - bh, x1, yb, st.wall, st, w * _DEPTH)
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


def _gate(p: _Painter, cx, yb, w, h, st: _Style, rng, ground_col: Colour) -> None:
    """A triumphal arch: one big and two small openings, pilasters, an attic on top."""
    x0, x1, y0 = cx - w / 2, cx + w / 2, yb - h
    _box(p, x0, y0, x1, yb, st.wall, st, w * _DEPTH)
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


def _bridge(p: _Painter, cx, yb, w, h, st: _Style, rng, ground_col: Colour) -> None:
    """Arches under a deck, with two towers or suspension cables above it."""
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


def _temple(p: _Painter, cx, yb, w, h, st: _Style, rng, ground_col: Colour) -> None:
    """A classical temple: three steps, a colonnade and a pediment."""
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


def _pyramid(p: _Painter, cx, yb, w, h, st: _Style, rng, ground_col: Colour) -> None:
    """A stepped ziggurat (flat-ish roof styles) or a smooth, two-toned pyramid."""
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


def _lighthouse(p: _Painter, cx, yb, w, h, st: _Style, rng, ground_col: Colour) -> None:
    """A tapering, striped lighthouse with a gallery, a lantern and a cap."""
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


def _skyscraper(p: _Painter, cx, yb, w, h, st: _Style, rng, ground_col: Colour) -> None:
    """One to three set-back sections of windows, with a mast or a flat top."""
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


_STRUCTURES: dict[str, Callable[..., None]] = {
    "hall": _hall,
    "tower": _tower,
    "dome": _dome_building,
    "gate": _gate,
    "bridge": _bridge,
    "temple": _temple,
    "pyramid": _pyramid,
    "lighthouse": _lighthouse,
    "skyscraper": _skyscraper,
}


def _structure(p: _Painter, kind: str, cx, yb, w, h, st: _Style, rng, ground_col: Colour) -> None:
    _STRUCTURES[kind](p, cx, yb, w, h, st, rng, ground_col)
