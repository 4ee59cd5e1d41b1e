"""The kNN member of a head: a similarity-weighted vote of the nearest training texts. Pure (torch).

The MLP, linear and TF-IDF members each learn one decision surface; a nearest-neighbour vote
instead reads the training texts themselves, so it catches a text that sits among a handful of
training examples the smooth members got wrong. Its vote, for a raw embedding ``x``:

    p_knn(c | x) ∝ sum over the k most cosine-similar training vectors v_i with label c of exp((cos(x, v_i) - 1) / temp)

and its "logits" are ``log(p_knn + FLOOR)`` (a label none of the k neighbours carries keeps a small
probability, so the head's member temperature and mixing stay finite). It is mixed with the other
members like any member (its own temperature and mixing weight, see :mod:`embedclf.heads.mlp`).

Stored with the head's other weights, never pickled: ``knn.vectors`` (``[n_vectors, input_dim]``,
the L2-normalised training embeddings, float16: half the size, a cosine off by < 1e-3) and
``knn.labels`` (``[n_vectors]`` int64 class indices); the config holds
``{"kind": "knn-vote", "k": ..., "temp": ..., "n_vectors": ...}``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from embedclf.errors import HeadLoadError

KIND = "knn-vote"
KEYS = {"kind", "k", "temp", "n_vectors"}
#: rows scored at once (a chunk's similarity matrix is CHUNK x n_vectors float32)
CHUNK = 512
#: added to the vote before its log: the probability floor of a label no neighbour carries
FLOOR = 1e-4


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_config(cfg: object) -> dict:
    """The validated ``knn`` config (HeadLoadError, a ValueError, on anything else)."""
    if not isinstance(cfg, dict) or set(cfg) != KEYS:
        raise HeadLoadError(f"knn must be an object with keys {sorted(KEYS)}, got {cfg!r}")
    if cfg["kind"] != KIND:
        raise HeadLoadError(f"unknown knn kind {cfg['kind']!r} (known: {KIND})")
    temp = cfg["temp"]
    if isinstance(temp, bool) or not isinstance(temp, (int, float)) or not (math.isfinite(temp) and temp > 0):
        raise HeadLoadError(f"knn temp must be a number > 0, got {temp!r}")
    if not _positive_int(cfg["k"]) or not _positive_int(cfg["n_vectors"]):
        raise HeadLoadError(f"knn k and n_vectors must be integers >= 1, got {cfg['k']!r}, {cfg['n_vectors']!r}")
    return cfg


def make_config(k: int, temp: float, n_vectors: int) -> dict:
    return check_config({"kind": KIND, "k": int(k), "temp": float(temp), "n_vectors": int(n_vectors)})


class KnnMember(nn.Module):
    """The vote of the ``k`` nearest stored training vectors, as log-probabilities over ``num_labels``."""

    vectors: torch.Tensor
    labels: torch.Tensor

    def __init__(self, cfg: dict, input_dim: int, num_labels: int) -> None:
        super().__init__()
        self.cfg = check_config(cfg)
        self.k, self.temp, self.num_labels = int(cfg["k"]), float(cfg["temp"]), num_labels
        n = int(cfg["n_vectors"])
        self.register_buffer("vectors", torch.zeros(n, input_dim, dtype=torch.float16))
        self.register_buffer("labels", torch.zeros(n, dtype=torch.int64))
        self._f32: torch.Tensor | None = None
        self._f32_key: tuple[int, int] | None = None

    def set_vectors(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Store raw training embeddings ``x`` (L2-normalised) and their class indices ``y``."""
        if tuple(x.shape) != tuple(self.vectors.shape) or tuple(y.shape) != tuple(self.labels.shape):
            raise ValueError(f"expected {tuple(self.vectors.shape)} vectors and {len(self.labels)} labels, "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_labels):
            raise ValueError(f"knn labels must be class indices in [0, {self.num_labels})")
        with torch.no_grad():
            self.vectors.copy_(nn.functional.normalize(x.float(), dim=-1).half())
            self.labels.copy_(y.long())

    def _table(self) -> torch.Tensor:
        """The vectors as float32 (kept between calls; rebuilt when the buffer changes)."""
        key = (self.vectors._version, self.vectors.data_ptr())
        if self._f32 is None or self._f32_key != key:
            self._f32, self._f32_key = self.vectors.float(), key
        return self._f32

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, num_labels]``: ``log(p_knn + FLOOR)`` for raw embeddings ``x``."""
        table, z = self._table(), nn.functional.normalize(x.float(), dim=-1)
        k = min(self.k, len(table))
        out = []
        for i in range(0, len(z), CHUNK):
            sims, idx = torch.topk(z[i:i + CHUNK] @ table.T, k, dim=1)
            w = torch.exp((sims - 1.0) / self.temp)
            votes = torch.zeros(len(sims), self.num_labels).scatter_add_(1, self.labels[idx], w)
            out.append(torch.log(votes / votes.sum(1, keepdim=True).clamp_min(1e-30) + FLOOR))
        return torch.cat(out) if out else torch.zeros(0, self.num_labels)
