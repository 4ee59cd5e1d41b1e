"""A deterministic, model-free embedder for fast unit tests of the core.

Hashes word unigrams and character trigrams into ``dim`` buckets (signed),
then L2-normalises: texts that share words get similar vectors, so heads
trained on it learn something real, and the same text always maps to the
same vector, in any batch.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import numpy as np

from embedclf.embedders.base import Embedder, l2_normalize


class FakeEmbedder(Embedder):
    def __init__(self, dim: int = 64, delay_s: float = 0.0) -> None:
        if dim < 2:
            raise ValueError("dim must be >= 2")
        self.dim = dim
        self.delay_s = delay_s  # the time a model would take per call (the vectors do not depend on it)
        self.model_id = f"fake:{dim}"
        self.calls: list[int] = []  # sizes of embed_batch calls, for tests

    def _features(self, text: str) -> list[str]:
        words = text.lower().split()
        grams = [f"w:{w}" for w in words]
        padded = f" {text.lower()} "
        grams += [f"c:{padded[i:i + 3]}" for i in range(max(0, len(padded) - 2))]
        return grams

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        if self.delay_s:
            time.sleep(self.delay_s)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for gram in self._features(text):
                h = hashlib.blake2b(gram.encode("utf-8", "surrogatepass"), digest_size=8).digest()
                v = int.from_bytes(h, "little")
                out[row, v % self.dim] += 1.0 if (v >> 32) & 1 else -1.0
        return l2_normalize(out)

    def count_tokens(self, text: str) -> int:
        return max(1, len(text.split()))
