"""encoder.onnx: the encoder of an embed run as an ONNX graph, written and checked by `embed`.

The graph takes what embed, query and serve feed the model: uint8 (batch, S, S, 3) RGB images at
the stored side S (retrieval/preprocess.py), and gives the raw row embed computes before its
post-processing: resize to the encoder's input side (torch's antialiased bilinear, in the graph
with the same taps and fused multiply-adds as torch's CPU kernel: bit-identical pixels), the
[-1, 1] scaling, the encoder, the pooling. L2 / PCA-whitening (transform.npz), DBA and αQE stay
numpy, where they already are. The batch is dynamic; so are height and width when nothing is
resized and the encoder pools (M5: conv + pooling), else they are the stored side.

At export the graph runs on a real batch of the run's images beside torch: the largest absolute
difference and the share of images whose top-k neighbours (among that batch) agree are recorded in
embed.json's `onnx`; over tolerance the file is not kept (one log line) and the run answers on torch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from landmark_ae.retrieval.onnx_encoder import INPUT, ONNX_FILE, OUTPUT, OnnxEncoder
from landmark_ae.retrieval.postprocess import encoder_rows
from landmark_ae.retrieval.preprocess import resize_taps

log = logging.getLogger(__name__)

OPSET = 18
CHECK_IMAGES = 64  # the real batch the export is checked on
CHECK_K = 10
TOLERANCE = 1e-4  # largest absolute difference allowed, relative to the rows' largest absolute value (at least 1)


class ResizeAxis(nn.Module):
    """One axis (`dim` of an NCHW tensor) of torch's antialiased bilinear resize, as
    preprocess._resize_last_axis: one Gather per tap along that axis, no transposes (they took 18 % of
    the graph's time at 112 px)."""

    def __init__(self, in_size: int, out_size: int, dim: int):
        super().__init__()
        positions, weights = resize_taps(in_size, out_size)
        self.dim = dim
        shape = (-1,) + (1,) * (3 - dim)  # the weights broadcast along the resized axis
        self.register_buffer("positions", torch.from_numpy(np.ascontiguousarray(positions.T)))
        self.register_buffer("weights", torch.from_numpy(weights.T.astype(np.float64)).reshape(len(weights.T), *shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: uint8 (gathered as bytes, a quarter of float32's traffic) or float32; float32 out."""
        total = torch.index_select(x, self.dim, self.positions[0]).float() * self.weights[0].float()
        for j in range(1, len(self.weights)):  # float64 product and sum, one rounding: an FMA
            tap = torch.index_select(x, self.dim, self.positions[j])
            total = (tap.double() * self.weights[j] + total.double()).float()
        return total


class EncoderGraph(nn.Module):
    """uint8 (N, S, S, 3) images -> the pooled encoder rows embed computes (its raw rows)."""

    def __init__(self, encoder: nn.Module, image_size: int, input_size: int, pooling: str, gem_p: float):
        super().__init__()
        self.encoder, self.pooling, self.gem_p = encoder, pooling, gem_p
        self.resize = image_size != input_size
        if self.resize:
            self.width, self.height = ResizeAxis(image_size, input_size, 3), ResizeAxis(image_size, input_size, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2)
        if self.resize:
            x = self.height(self.width(x))  # width first, as torch does; the first pass reads the uint8 image
            x = x.round().clamp(0, 255)
        else:
            x = x.float()
        x = x / 127.5 - 1.0
        return encoder_rows(self.encoder, x, self.pooling, self.gem_p)


def _dynamic_shapes(graph: EncoderGraph, pooled: bool) -> dict[str, Any]:
    batch = torch.export.Dim("batch", min=1)
    if graph.resize or not pooled:
        return {"images": {0: batch}}
    return {"images": {0: batch, 1: torch.export.Dim("height", min=8), 2: torch.export.Dim("width", min=8)}}


@contextlib.contextmanager
def _quiet():
    """torch.onnx.export's progress lines, warnings and log records kept off the user's stderr."""
    loggers = [logging.getLogger(name) for name in ("torch", "onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def write_graph(graph: EncoderGraph, sample: np.ndarray, path: Path, pooled: bool) -> None:
    example = torch.from_numpy(np.ascontiguousarray(sample[:2]))
    with _quiet(), torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(graph.eval(), (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes=_dynamic_shapes(graph, pooled), opset_version=OPSET,
                                    optimize=True, verbose=False)
        program.save(str(path))


def top_k_agreement(reference: np.ndarray, candidate: np.ndarray, k: int = CHECK_K) -> float:
    """The share of rows whose k nearest other rows (Euclidean, in order) are the same under both."""
    k = min(k, len(reference) - 1)
    if k < 1:
        return 1.0

    def ranks(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        d = (x * x).sum(1)[:, None] - 2 * x @ x.T + (x * x).sum(1)[None, :]
        np.fill_diagonal(d, np.inf)
        return np.argsort(d, axis=1, kind="stable")[:, :k]

    return float((ranks(reference) == ranks(candidate)).all(axis=1).mean())


def export_checked(run_dir: Path, encoder: Any, image_size: int, sample: np.ndarray) -> dict[str, Any] | None:
    """Write run_dir/encoder.onnx for `encoder` (embed's Encoder: model, input_size, pooling, gem_p),
    check it on `sample` (uint8 (n, S, S, 3), real images of the run) against torch; the record for
    embed.json, or None (no file kept) when it cannot be exported or is over tolerance."""
    path = run_dir / ONNX_FILE
    tmp = run_dir / f".{ONNX_FILE}.tmp"
    tick = time.perf_counter()
    model = encoder.model
    pooled = encoder.pooling != "flatten" or _ends_pooled(model.encoder)
    graph = EncoderGraph(model.encoder, image_size, encoder.input_size, encoder.pooling, encoder.gem_p).to("cpu")
    try:
        write_graph(graph, sample, tmp, pooled)
        got = OnnxEncoder(tmp, batch_size=len(sample))(sample)
    except Exception as exc:  # an exporter's or runtime's own error: the run still answers on torch
        tmp.unlink(missing_ok=True)
        log.warning("encoder.onnx not written (%s: %s): this run answers on torch", type(exc).__name__,
                    str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "")
        return None
    finally:
        model.to(encoder.device)
    reference = encoder(sample)
    diff = float(np.abs(got - reference).max()) if reference.size else 0.0
    allowed = TOLERANCE * max(1.0, float(np.abs(reference).max()) if reference.size else 1.0)
    record = {"file": ONNX_FILE, "opset": OPSET, "checked_images": int(len(sample)), "max_abs_diff": diff,
              "tolerance": allowed, "top_k": min(CHECK_K, max(len(sample) - 1, 0)),
              "top_k_agreement": top_k_agreement(reference, got), "input": f"uint8 NHWC {image_size}x{image_size}",
              "dynamic": ["batch"] + (["height", "width"] if pooled and image_size == encoder.input_size else []),
              "export_s": round(time.perf_counter() - tick, 2)}
    if not diff <= allowed:
        tmp.unlink(missing_ok=True)
        log.warning("encoder.onnx differs from torch by %.3g (tolerance %.3g) on %d images: not kept, this run "
                    "answers on torch", diff, allowed, len(sample))
        return None
    os.replace(tmp, path)
    return record


def _ends_pooled(encoder: nn.Module) -> bool:
    """Whether the encoder itself pools space away (AdaptiveAvgPool2d/AdaptiveMaxPool2d before its end)."""
    return any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) for m in encoder.modules())


def sample_images(source: Any, n: int = CHECK_IMAGES) -> np.ndarray:
    """Up to n real images of what embed embeds (embed.Source), uint8 at the stored side."""
    if source.collection is not None:
        from landmark_ae.retrieval.collection import decode_batches

        for _, images, _ in decode_batches(source.collection, source.image_size, n):
            if images is not None:
                return images
        return np.zeros((0, source.image_size, source.image_size, 3), np.uint8)
    parts = [np.asarray(split.images[:n]) for split in source.splits.values() if len(split.images)]
    return np.concatenate(parts)[:n] if parts else np.zeros((0, source.image_size, source.image_size, 3), np.uint8)


def export_for_run(cfg: Any, run_dir: Path, encoder: Any, source: Any) -> tuple[Any, dict[str, Any] | None]:
    """embed's ONNX step: encoder.onnx written and checked (cfg.onnx), and what encodes the run once the
    file is kept: the ONNX encoder with runtime=onnx; with auto on the CPU, whichever of the two encoded
    the check's images faster (both figures in embed.json's onnx.images_per_s); else `encoder` itself."""
    from landmark_ae.config import enum_value
    from landmark_ae.errors import UserError

    runtime = enum_value(cfg.runtime)
    if not cfg.onnx:
        if runtime == "onnx":
            raise UserError("runtime=onnx encodes with encoder.onnx, which onnx=false does not write: pass onnx=true "
                            "(or runtime=torch)")
        return encoder, None
    sample = sample_images(source)
    if not len(sample):
        return encoder, None
    record = export_checked(run_dir, encoder, source.image_size, sample)
    if record is None:
        return encoder, None
    if runtime == "torch" or (runtime == "auto" and encoder.device.type != "cpu"):
        record["encoded_with"] = "torch"
        return encoder, record
    onnx_encoder = OnnxEncoder(run_dir / ONNX_FILE, encoder.batch_size, int(cfg.get("threads") or 0),
                               encoder.input_size, spin=source.collection is None)
    if runtime == "auto":
        # The faster of the two on this machine: ONNX Runtime wins at 112 px, torch at 48 px, where the
        # graph's bit-identical resize costs more than the encoder (BENCHMARKS.md, ONNX Runtime against torch).
        record["images_per_s"] = timed = race(onnx_encoder, encoder, sample)
        if timed["torch"] > timed["onnx"]:
            record["encoded_with"] = "torch"
            return encoder, record
    record["encoded_with"] = "onnx"
    return onnx_encoder, record


def race(onnx_encoder: Any, encoder: Any, sample: np.ndarray, rounds: int = 2) -> dict[str, float]:
    """Images per second of each runtime on `sample`: the best of `rounds` timed runs, taken in turns
    after one untimed run each (ONNX Runtime's allocations, oneDNN's primitives)."""
    best = {"onnx": np.inf, "torch": np.inf}
    runners = {"onnx": onnx_encoder, "torch": encoder}
    for encode in runners.values():
        encode(sample)
    for _ in range(rounds):
        for name, encode in runners.items():
            tick = time.perf_counter()
            encode(sample)
            best[name] = min(best[name], time.perf_counter() - tick)
    return {name: round(len(sample) / max(seconds, 1e-9), 1) for name, seconds in best.items()}
