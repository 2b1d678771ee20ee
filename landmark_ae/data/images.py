"""Decode, verify and resize one image; shared by every prepare source and by query.

The stored image is what the model sees: the array kept for training is decoded from the very
JPEG bytes written to disk, so a stored file and its array row never differ.
"""

from __future__ import annotations

import errno
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

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


# What Path.is_file() takes for "not a file" (no such path, a directory in the way, a symlink loop), plus
# reading a directory: the errors that make a path "missing".
NOT_A_FILE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF, errno.EISDIR})


def _read(source: bytes | Path | str) -> bytes:
    """The encoded bytes of `source`: bytes as they are, a path's contents (one read, no separate
    existence check); a missing path is ImageError("missing")."""
    if isinstance(source, (str, Path)):
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            if exc.errno not in NOT_A_FILE:
                raise
            raise ImageError("missing", str(source)) from None
    else:
        data = source
    if not data:
        raise ImageError("empty")
    return data


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """The image opened (not decoded) after the size guard and the format's structural check.

    Formats whose verify() checks something (PNG's CRCs, ...) are verified and opened again, as
    verify() requires; for the rest (JPEG among them) verify() only closes the file, so the probe
    itself is returned: one header parse instead of two."""
    probe = Image.open(io.BytesIO(data))
    width, height = probe.size
    if width * height > max_pixels:
        raise ImageError("too_large", f"{width}x{height} pixels")
    if type(probe).verify is ImageFile.ImageFile.verify:
        return probe
    probe.verify()
    return Image.open(io.BytesIO(data))


def _decode(source: bytes | Path | str, draft_size: int | None, max_pixels: int) -> tuple[Image.Image, tuple[int, int]]:
    """(RGB image, original size as stored in the file); see open_rgb."""
    data = _read(source)
    try:
        img = _open_checked(data, max_pixels)
        original = img.size
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        if img.mode in WIDE_MODES:
            img = _to_8bit(img)
        if img.mode in ("RGBA", "LA", "P", "PA") and ("A" in img.mode or "transparency" in img.info):
            # Composite transparency on white, as a viewer shows it.
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        return (img if img.mode == "RGB" else img.convert("RGB")), original
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", str(exc)) from None
    except UnidentifiedImageError:
        raise ImageError("not_an_image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise ImageError("corrupt", str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def open_rgb(source: bytes | Path | str, draft_size: int | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode any readable image to RGB, honouring EXIF orientation.

    draft_size lets JPEG decode at a reduced scale (much cheaper for large photos) while keeping
    at least draft_size pixels on each side.
    """
    return _decode(source, draft_size, max_pixels)[0]


def resized_rgb(source: bytes | Path | str, size: int) -> tuple[Image.Image, tuple[int, int]]:
    """Decode and resize to size x size, as prepare stores images; returns (image, original size).

    The seed resizes without keeping the aspect ratio; so do we, for training and queries alike.
    """
    img, original = _decode(source, size, MAX_PIXELS)
    return img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0), original


def resized_jpeg(source: bytes | Path | str, size: int, quality: int = 95) -> tuple[bytes, int, int]:
    """(JPEG bytes of the image resized as prepare stores it, original width, original height)."""
    small, (width, height) = resized_rgb(source, size)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), width, height


def prepare_image(source: bytes | Path | str, size: int, quality: int = 95) -> Prepared:
    """Resize and JPEG-encode; the array is decoded from those JPEG bytes, exactly as stored."""
    jpeg, width, height = resized_jpeg(source, size, quality)
    return Prepared(array=decode_array(jpeg), jpeg=jpeg, width=width, height=height)


def decode_array(jpeg: bytes | Path) -> np.ndarray:
    """A stored (already resized) image, as bytes or a path, as a uint8 (H, W, 3) array."""
    with Image.open(io.BytesIO(jpeg) if isinstance(jpeg, bytes) else jpeg) as img:
        return np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
