"""The model's preprocessing of a stored-size image, reproduced without torch (numpy only).

embed, query and serve all feed the encoder the same way (data/prepared.resize_uint8 and
to_model_range): a uint8 (N, S, S, 3) image at the stored side S (prepare's, or a query image
decoded and resized to it by data/images.resized_rgb: Pillow bicubic, reducing_gap 3) is resized
to the encoder's input side with torch's antialiased bilinear filter (F.interpolate, float32,
align_corners=False), rounded half-to-even, clamped to 0..255, then mapped to [-1, 1] as x / 127.5 - 1.

`resize_taps` computes torch's filter taps exactly (its float32 arithmetic, in its order), and
`resize_images` applies them as torch's CPU kernel does: width first, then height, each output a
running sum over its taps in which every step is a fused multiply-add (one rounding per step: the
product and the sum taken in float64, which holds them exactly, then rounded to float32). The
result is bit-identical to torch's on a CPU with FMA at the sizes checked (96 -> 48, 112, 150: tests/test_onnx.py;
96 -> 33 differed in 1 value of 1.2 million, by 1: the emulated FMA rounds twice). encoder.onnx carries the
same steps in its graph (retrieval/onnx_export.py), so what is fed to it is the stored-size image.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PREPROCESS_VERSION", "model_range", "preprocess_spec", "resize_images", "resize_taps"]

PREPROCESS_VERSION = 1


def resize_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, weights), each (out_size, taps): the input pixels each output pixel of one axis
    is a weighted sum of, as torch's antialiased bilinear resize computes them (unused taps: weight 0
    at the first position)."""
    f32 = np.float32
    scale = f32(in_size / out_size)
    support = scale if scale >= 1 else f32(1.0)  # bilinear: interp_size 2, times the scale when shrinking
    invscale = f32(1.0) / scale if scale >= 1 else f32(1.0)
    rows: list[tuple[int, list[np.float32]]] = []
    for i in range(out_size):
        center = f32(scale * f32(i + 0.5))
        first = max(int(center - support + f32(0.5)), 0)
        last = min(int(center + support + f32(0.5)), in_size)
        weights = []
        for j in range(last - first):
            x = abs(f32((f32(j + first) - center + f32(0.5)) * invscale))
            weights.append(f32(1.0) - x if x < 1 else f32(0.0))
        total = f32(0.0)
        for w in weights:
            total = f32(total + w)
        rows.append((first, [f32(w / total) for w in weights] if total != 0 else weights))
    taps = max(len(w) for _, w in rows)
    positions = np.zeros((out_size, taps), dtype=np.int64)
    weights_out = np.zeros((out_size, taps), dtype=np.float32)
    for i, (first, weights) in enumerate(rows):
        positions[i] = first
        positions[i, : len(weights)] = np.arange(first, first + len(weights))
        weights_out[i, : len(weights)] = weights
    return positions, weights_out


def _resize_last_axis(x: np.ndarray, positions: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """x (..., in) float32 -> (..., out): each output the FMA running sum over its taps."""
    gathered = x[..., positions]  # (..., out, taps)
    total = gathered[..., 0] * weights[:, 0]
    for j in range(1, weights.shape[1]):
        total = (gathered[..., j].astype(np.float64) * weights[:, j] + total).astype(np.float32)
    return total


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, S, S, 3) -> uint8 (N, 3, size, size), bit-identical to data/prepared.resize_uint8."""
    x = np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2))
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.astype(np.uint8, copy=False)
    x = x.astype(np.float32)
    x = _resize_last_axis(x, *resize_taps(x.shape[-1], size))  # width first, as torch does
    x = _resize_last_axis(x.swapaxes(-1, -2), *resize_taps(x.shape[-2], size)).swapaxes(-1, -2)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def model_range(batch: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1], as data/prepared.to_model_range: x / 127.5 - 1 in float32."""
    return np.asarray(batch, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def preprocess_spec(image_size: int, input_size: int) -> dict:
    """preprocess.json: how an image becomes the input encoder.onnx takes (and what it does inside)."""
    return {
        "version": PREPROCESS_VERSION,
        "decode": "Pillow: EXIF orientation applied, converted to RGB (transparency composited on white); a JPEG "
                  f"decoded with draft('RGB', ({image_size}, {image_size}))",
        "image_size": image_size,
        "resize_filter": f"Pillow BICUBIC to {image_size}x{image_size}, reducing_gap=3.0, aspect ratio not kept",
        "onnx_input": {"name": "images", "dtype": "uint8", "layout": "NHWC", "channel_order": "RGB",
                       "value_range": [0, 255], "shape": ["batch", image_size, image_size, 3]},
        "in_graph": {"resize": f"{image_size} -> {input_size}, torch's antialiased bilinear (align_corners=False), "
                               "rounded half-to-even, clamped to 0..255" if image_size != input_size else "none",
                     "value_range": [-1.0, 1.0], "scaling": "x / 127.5 - 1", "layout": "NCHW"},
        "input_size": input_size,
        "onnx_output": {"name": "embedding", "what": "the pooled encoder output (embed.json raw_dim values), "
                        "before the post-processing of transform.npz"},
    }
