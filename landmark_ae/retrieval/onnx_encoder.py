"""Running encoder.onnx (retrieval/onnx_export.py writes it) with ONNX Runtime, without torch.

    OnnxEncoder(path, batch_size, threads)(images)   uint8 (N, S, S, 3) -> float32 (N, raw_dim)

the raw rows embed computes with torch, before transform.npz. Kept to numpy and onnxruntime: with
runtime=onnx, query and serve import neither torch nor pandas, scikit-learn or torchvision.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

ONNX_FILE = "encoder.onnx"
# Images per session run (M5 on 2 cores, interleaved, medians of 5): 48 px 806 images/s in runs of 16, 640 in
# runs of 256; 112 px 301 and 312 (no difference). Embed's batch_size still sets the progress steps.
RUN_CHUNK = 16
INPUT = "images"
OUTPUT = "embedding"

__all__ = ["INPUT", "ONNX_FILE", "OUTPUT", "OnnxEncoder"]


class OnnxEncoder:
    """encoder.onnx on ONNX Runtime's CPU provider."""

    def __init__(self, path: Path | str, batch_size: int = 64, threads: int = 0, input_size: int | None = None,
                 spin: bool = False):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no provider notices on the user's stderr
        # No busy-waiting between runs by default: ONNX Runtime's threads spin, taking the cores serve's
        # decoding threads and event loop need. spin=True is for embed over prepared arrays, where runs
        # follow each other and nothing else waits for a core (M5 at 112 px: 501 -> 586 images/s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        self.batch_size = int(batch_size)
        self.input_size = input_size  # the side the graph resizes to for its encoder (embed.json's input_size)

    def __call__(self, images: np.ndarray, on_batch: Callable[[int], None] = lambda n: None) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = np.ascontiguousarray(images[start : start + self.batch_size], dtype=np.uint8)
            for i in range(0, len(batch), RUN_CHUNK):
                out.append(self.session.run([OUTPUT], {INPUT: batch[i : i + RUN_CHUNK]})[0])
            on_batch(len(batch))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)
