"""Decode, verify and resize one image; shared by every prepare source and by query.

The stored image is what the model sees: the array kept for training is decoded from the very
JPEG bytes written to disk, so a stored file and its array row never differ.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from landmark_ae.runs import write_bytes_atomic

# The file suffixes taken as images where a folder is listed (query image=<folder>, embed images=<folder>).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

# Pillow's own decompression-bomb guard is a warning below 2x its limit; make it an error at 64 MP.
MAX_PIXELS = 64_000_000


class ImageError(Exception):
    """An image that cannot be used; `reason` is a short stable code for the failures manifest."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Prepared:
    array: np.ndarray  # (size, size, 3) uint8, decoded from `jpeg`
    jpeg: bytes
    width: int  # original size
    height: int


# Greyscale modes wider than 8 bits: Pillow's convert("RGB") clips them (a 16-bit image turns white).
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float greyscale image scaled to 8 bits ("L").

    Integer images are read on their format's scale: values up to 255 as they are, up to 65535 (a
    16-bit PNG or TIFF, which Pillow may open as "I") divided by 257; floats in [0, 1] times 255.
    Anything else (negative values, larger ranges) is stretched from its own minimum to maximum.
    """
    a = np.asarray(img, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        raise ImageError("corrupt", f"mode {img.mode} image holds no finite values")
    lo, hi = float(finite.min()), float(finite.max())
    if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
        scaled = a * 255.0
    elif img.mode != "F" and lo >= 0 and hi <= 255:
        scaled = a
    elif img.mode != "F" and lo >= 0 and hi <= 65535:
        scaled = a / 257.0
    else:
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def open_rgb(source: bytes | Path | str, draft_size: int | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode any readable image to RGB, honouring EXIF orientation.

    draft_size lets JPEG decode at a reduced scale (much cheaper for large photos) while keeping
    at least draft_size pixels on each side.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError("missing", str(path))
        data = path.read_bytes()
    else:
        data = source
    if not data:
        raise ImageError("empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                raise ImageError("too_large", f"{width}x{height} pixels")
            probe.verify()  # structural check before the real decode
        img = Image.open(io.BytesIO(data))
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in WIDE_MODES:
            img = _to_8bit(img)
        if img.mode in ("RGBA", "LA", "P", "PA") and ("A" in img.mode or "transparency" in img.info):
            # Composite transparency on white, as a viewer shows it.
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        return img.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", str(exc)) from None
    except UnidentifiedImageError:
        raise ImageError("not_an_image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise ImageError("corrupt", str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def original_size(source: bytes | Path) -> tuple[int, int]:
    data = Path(source).read_bytes() if isinstance(source, Path) else source
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def resized_rgb(source: bytes | Path | str, size: int) -> tuple[Image.Image, tuple[int, int]]:
    """Decode and resize to size x size, as prepare stores images; returns (image, original size).

    The seed resizes without keeping the aspect ratio; so do we, for training and queries alike.
    """
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) and Path(source).is_file() else source
    img = open_rgb(data, draft_size=size)
    original = original_size(data) if isinstance(data, bytes) else img.size
    return img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0), original


def prepare_image(source: bytes | Path | str, size: int, quality: int = 95) -> Prepared:
    """Resize and JPEG-encode; the array is decoded from those JPEG bytes, exactly as stored."""
    small, (width, height) = resized_rgb(source, size)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    jpeg = buf.getvalue()
    array = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.uint8)
    return Prepared(array=array, jpeg=jpeg, width=width, height=height)


def save_prepared(prepared: Prepared, dest: Path) -> None:
    write_bytes_atomic(dest, prepared.jpeg)


def load_array(path: Path) -> np.ndarray:
    """A stored (already resized) image as a uint8 array."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
