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


def _reference_resized_jpeg(data: bytes, size: int, quality: int) -> bytes:
    """prepare's decode + resize + encode as it was written before it was made lean (a verify pass,
    a second open, exif_transpose into a copy, convert into a copy)."""
    from PIL import ImageOps

    with Image.open(io.BytesIO(data)) as probe:
        probe.verify()
    img = Image.open(io.BytesIO(data))
    if img.format == "JPEG":
        img.draft("RGB", (size, size))
    img.load()
    img = ImageOps.exif_transpose(img).convert("RGB")
    buf = io.BytesIO()
    img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [None, 6, 3])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_stored_bytes_equal_the_reference_pipeline_with_one_header_parse(fmt, orientation):
    from landmark_ae.data.images import decode_array, prepare_image, resized_jpeg

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format=fmt, exif=exif.tobytes())
    data = buf.getvalue()
    jpeg, width, height = resized_jpeg(data, 48, 90)
    assert jpeg == _reference_resized_jpeg(data, 48, 90)
    assert (width, height) == (130, 90)  # the size as stored in the file, before any EXIF rotation
    prepared = prepare_image(data, 48, 90)
    assert prepared.jpeg == jpeg and np.array_equal(prepared.array, decode_array(jpeg))
    assert prepared.array.shape == (48, 48, 3)


def test_a_png_with_a_bad_checksum_is_still_refused_as_corrupt():
    """Only PNG's verify() reads chunk CRCs (decoding ignores them): formats with a real verify() keep it."""
    import struct

    data = bytearray(encoded(Image.new("RGB", (16, 16), (10, 20, 30)), "PNG"))
    at = data.index(b"IDAT")
    data[at + 4 + struct.unpack(">I", data[at - 4:at])[0]] ^= 0xFF  # the IDAT chunk's CRC, not its data
    Image.open(io.BytesIO(bytes(data))).load()  # decodes fine
    with pytest.raises(ImageError) as info:
        open_rgb(bytes(data))
    assert info.value.reason == "corrupt" and "checksum" in info.value.detail


def test_missing_and_empty_sources_are_image_errors(tmp_path):
    from landmark_ae.data.images import resized_rgb

    (tmp_path / "empty.jpg").write_bytes(b"")
    for source, reason in [(tmp_path / "nowhere.jpg", "missing"), (str(tmp_path / "nowhere.jpg"), "missing"),
                           (tmp_path, "missing"), (tmp_path / "empty.jpg", "empty"), (b"", "empty")]:
        with pytest.raises(ImageError) as info:
            resized_rgb(source, 16)
        assert info.value.reason == reason, source


def test_write_bytes_atomic_leaves_the_file_whole_with_the_ordinary_mode_and_no_temp_file(tmp_path):
    import stat

    from landmark_ae.runs import FILE_MODE
    from landmark_ae.runs import write_bytes_atomic as write_file_atomic

    dest = tmp_path / "a.jpg"
    write_file_atomic(dest, b"first")
    write_file_atomic(dest, b"second" * 1000)  # replaces
    assert dest.read_bytes() == b"second" * 1000
    assert stat.S_IMODE(dest.stat().st_mode) == FILE_MODE
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(OSError):
        write_file_atomic(tmp_path / "dir.jpg", b"x")  # the rename fails: the temp file goes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "dir.jpg"]



def test_a_symlink_loop_is_missing_not_a_crash(tmp_path):
    from landmark_ae.data.images import resized_rgb

    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.raises(ImageError) as info:
        resized_rgb(loop, 16)
    assert info.value.reason == "missing"
