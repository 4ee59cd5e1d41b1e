"""A zero-cost embedder for queue benchmarks: ``null:DIM``. Not for real classification.

Each vector is a fixed function of the text's *length* only (no hashing of its content, no
model), so it costs a few microseconds per batch and measures the queue, not a model. Texts of
equal length get equal vectors; a head trained on it learns little, but it loads, runs and
writes rows through the same path as any real embedder.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedclf.embedders.base import Embedder


class NullEmbedder(Embedder):
    def __init__(self, dim: int = 64) -> None:
        if dim < 2:
            raise ValueError("dim must be >= 2")
        self.dim = dim
        self.model_id = f"null:{dim}"
        self._freq = (np.arange(1, dim + 1, dtype=np.float32) * 0.37).reshape(1, -1)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        lengths = np.fromiter((len(t) for t in texts), dtype=np.float32, count=len(texts)).reshape(-1, 1)
        v = np.sin(np.log1p(lengths) * self._freq)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return v.astype(np.float32, copy=False)

    def count_tokens(self, text: str) -> int:
        return 1 + len(text) // 4
