"""Image decoding (landmark_ae/data/images.py): every Pillow mode a photo may come in reaches the
model as the right 8-bit RGB, never clipped (16-bit and float images scaled, not turned white/black)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from landmark_ae.data.images import ImageError, open_rgb

GRADIENT = np.tile(np.linspace(0.0, 1.0, 64), (32, 1))  # left black, right white


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def grey_of(source: bytes) -> np.ndarray:
    rgb = np.asarray(open_rgb(source), dtype=np.float64)
    assert rgb.shape[-1] == 3 and np.array_equal(rgb[..., 0], rgb[..., 1])
    return rgb[..., 0]


@pytest.mark.parametrize(("mode", "fmt", "array"), [
    ("L", "PNG", (GRADIENT * 255).round().astype(np.uint8)),
    ("I;16", "PNG", (GRADIENT * 65535).round().astype(np.uint16)),  # a 16-bit greyscale PNG
    ("I;16", "TIFF", (GRADIENT * 65535).round().astype(np.uint16)),
    ("I", "TIFF", (GRADIENT * 65535).round().astype(np.int32)),  # 16-bit values held in 32 bits
    ("F", "TIFF", GRADIENT.astype(np.float32)),  # float in [0, 1]
])
def test_wide_greyscale_modes_are_scaled_to_8_bits_not_clipped(mode, fmt, array):
    img = Image.fromarray(array)
    assert img.mode == mode
    grey = grey_of(encoded(img, fmt))
    assert np.abs(grey - GRADIENT * 255).max() <= 1.0  # the same gradient, 0 to 255
    assert 120 < grey.mean() < 135  # not all white (254) or all black


def test_float_images_outside_0_1_are_stretched_from_their_own_range():
    img = Image.fromarray((GRADIENT * 1000.0 - 500.0).astype(np.float32))
    grey = grey_of(encoded(img, "TIFF"))
    assert grey.min() == 0 and grey.max() == 255 and np.abs(grey - GRADIENT * 255).max() <= 1.0


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK"])
def test_8_bit_modes_decode_to_rgb(mode):
    rgb = Image.new("RGB", (40, 30), (200, 60, 20))
    img = rgb.convert(mode)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    out = np.asarray(open_rgb(encoded(img, fmt)))
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    expected = np.asarray(img.convert("RGB"))[0, 0]
    assert np.abs(out[0, 0].astype(int) - expected.astype(int)).max() <= 2


def test_transparency_is_composited_on_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    assert tuple(np.asarray(open_rgb(encoded(img, "PNG")))[0, 0]) == (255, 255, 255)


def test_a_float_image_without_finite_values_is_refused():
    img = Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32))
    with pytest.raises(ImageError) as info:
        open_rgb(encoded(img, "TIFF"))
    assert info.value.reason == "corrupt"
