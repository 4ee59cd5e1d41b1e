"""A zero-cost embedder for queue benchmarks: ``null:DIM``. Not for real classification.

Each vector is a fixed function of the text's *length* only (no hashing of its content, no
model), so it costs a few microseconds per batch and measures the queue, not a model. Texts of
equal length get equal vectors; a head trained on it learns little, but it loads, runs and
writes rows through the same path as any real embedder.

**A device stand-in**: ``null:DIM?us_per_text=N`` also sleeps N microseconds per text in every
``embed_batch``, without using the CPU or holding the GIL, like a GPU kernel a worker waits on
(``us_per_text=100``: a device embedding 10,000 texts/s). ``bench e2e`` with it shows how fast a
device one worker process can feed with a given head, on a host without that device: the queue,
the heads, the writes and Postgres at full cost, the model at none. It is a lower bound on a real
model's CPU cost in the worker: a real GPU embedder's own Python (tokenizing, batching) takes the
GIL too. The vectors and ``model_id`` are the same with or without the option, so a head trained on
``null:DIM`` serves either.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from embedclf.embedders.base import Embedder, model_starting

#: the stand-in's slowest setting: a device at one text a second
MAX_US_PER_TEXT = 1_000_000.0


class NullEmbedder(Embedder):
    def __init__(self, dim: int = 64, us_per_text: float = 0.0) -> None:
        if dim < 2:
            raise ValueError("dim must be >= 2")
        if not (math.isfinite(us_per_text) and 0.0 <= us_per_text <= MAX_US_PER_TEXT):
            raise ValueError(f"us_per_text must be a number of microseconds in [0, {MAX_US_PER_TEXT:g}]")
        self.dim = dim
        #: the device stand-in's sleep per text (microseconds; 0: none)
        self.us_per_text = float(us_per_text)
        #: the device stand-in signals its model's start, as a device embedder would before its kernels (the sleep)
        self.signals_model_start = self.us_per_text > 0
        self.model_id = f"null:{dim}"
        self._freq = (np.arange(1, dim + 1, dtype=np.float32) * 0.37).reshape(1, -1)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        model_starting()
        if self.us_per_text and texts:
            time.sleep(len(texts) * self.us_per_text / 1e6)  # releases the GIL, as a device's kernel would
        lengths = np.fromiter((len(t) for t in texts), dtype=np.float32, count=len(texts)).reshape(-1, 1)
        v = np.sin(np.log1p(lengths) * self._freq)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return v.astype(np.float32, copy=False)

    def count_tokens(self, text: str) -> int:
        return 1 + len(text) // 4
