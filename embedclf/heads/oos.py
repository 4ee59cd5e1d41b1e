"""An out-of-scope score from the embedding: cosine similarity to the nearest training texts. Pure (torch).

A head's top probability says how sure it is *among its labels*, not whether a text belongs to any
of them: an out-of-scope text close to one class gets a confident answer. How close the text's
embedding is to the training texts says that more directly. With an ``oos_score`` in its config, a
head abstains on a **discounted confidence**

    c(x) = p_max(x) * exp(-beta * (1 - s(x))),   s(x) = mean of the k largest cos(x, v_i)

instead of ``p_max(x)``, where ``v_i`` are the L2-normalised embeddings of the in-scope training
texts (the out-of-scope class's texts are left out). ``c`` is in [0, 1] like a probability, equals
``p_max`` for a text whose k nearest training texts are itself, and shrinks with the distance; the
head's ``abstain_threshold`` applies to it. The vectors are a buffer of the head (``oos.vectors``,
``[n_vectors, input_dim]``, float16: half the size, a cosine off by < 1e-3), stored with its other
weights; the config holds ``{"kind": "knn-cosine", "k": ..., "beta": ..., "n_vectors": ...}``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from embedclf.errors import HeadLoadError
from embedclf.heads.nearest import OrtSearch, TorchSearch, make_search
from embedclf.heads.numerics import unit_rows

KIND = "knn-cosine"
KEYS = {"kind", "k", "beta", "n_vectors"}
#: rows scored at once (a chunk's similarity matrix is CHUNK x n_vectors float32)
CHUNK = 512


def positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_neighbour_config(cfg: object, what: str, keys: set[str], kind: str, number: str,
                           positive: bool) -> dict:
    """A config of a score or member over stored training vectors: exactly ``keys``, the ``kind``, integers
    ``k`` and ``n_vectors`` >= 1 and a finite ``number`` >= 0 (> 0 if ``positive``); HeadLoadError otherwise."""
    if not isinstance(cfg, dict) or set(cfg) != keys:
        raise HeadLoadError(f"{what} must be an object with keys {sorted(keys)}, got {cfg!r}")
    if cfg["kind"] != kind:
        raise HeadLoadError(f"unknown {what} kind {cfg['kind']!r} (known: {kind})")
    v = cfg[number]
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 or v == 0 and
                                                                                            not positive)
    if not ok:
        raise HeadLoadError(f"{what} {number} must be a number {'>' if positive else '>='} 0, got {v!r}")
    if not positive_int(cfg["k"]) or not positive_int(cfg["n_vectors"]):
        raise HeadLoadError(f"{what} k and n_vectors must be integers >= 1, got {cfg['k']!r}, {cfg['n_vectors']!r}")
    return cfg


def check_config(cfg: object) -> dict:
    """The validated ``oos_score`` config (HeadLoadError, a ValueError, on anything else)."""
    cfg = check_neighbour_config(cfg, "oos_score", KEYS, KIND, "beta", positive=False)
    if cfg["k"] > cfg["n_vectors"]:
        raise HeadLoadError(f"oos_score k ({cfg['k']}) exceeds n_vectors ({cfg['n_vectors']})")
    return cfg


def make_config(k: int, beta: float, n_vectors: int) -> dict:
    return check_config({"kind": KIND, "k": int(k), "beta": float(beta), "n_vectors": int(n_vectors)})


class KnnScore(nn.Module):
    """Mean cosine of raw embeddings to their ``k`` nearest stored training vectors, and the discount."""

    vectors: torch.Tensor

    def __init__(self, cfg: dict, input_dim: int) -> None:
        super().__init__()
        self.cfg = check_config(cfg)
        self.k, self.beta = int(cfg["k"]), float(cfg["beta"])
        self.register_buffer("vectors", torch.zeros(int(cfg["n_vectors"]), input_dim, dtype=torch.float16))
        self._search: TorchSearch | OrtSearch | None = None
        self._search_key: tuple[int, int] | None = None

    def set_vectors(self, x: torch.Tensor) -> None:
        """Store raw training embeddings ``x`` (``[n_vectors, input_dim]``), L2-normalised."""
        if tuple(x.shape) != tuple(self.vectors.shape):
            raise ValueError(f"expected {tuple(self.vectors.shape)} training vectors, got {tuple(x.shape)}")
        with torch.no_grad():
            self.vectors.copy_(nn.functional.normalize(x.float(), dim=-1).half())

    def _searcher(self) -> TorchSearch | OrtSearch:
        """The exact float32 search over the vectors (kept between calls; rebuilt when the buffer changes)."""
        key = (self.vectors._version, self.vectors.data_ptr())
        if self._search is None or self._search_key != key:
            self._search, self._search_key = make_search(self.vectors), key
        return self._search

    @torch.no_grad()
    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """``[n]``: mean cosine of each raw embedding row to its ``k`` nearest training vectors."""
        search, z = self._searcher(), unit_rows(x)
        out = [search.search(z[i:i + CHUNK], self.k)[0].mean(dim=1) for i in range(0, len(z), CHUNK)]
        return torch.cat(out) if out else torch.zeros(0)

    @torch.no_grad()
    def discount(self, x: torch.Tensor) -> np.ndarray:
        """``[n]`` float64 factors ``exp(-beta * (1 - s))`` in (0, 1]."""
        s = self.similarity(x).double().clamp(max=1.0)
        return torch.exp(-self.beta * (1.0 - s)).numpy()


def discounted_confidence(proba: np.ndarray, discount: np.ndarray | None) -> np.ndarray:
    """Top probability per row, times the OOS discount when there is one."""
    conf = np.asarray(proba, dtype=np.float64).max(axis=1)
    return conf if discount is None else conf * np.asarray(discount, dtype=np.float64)
