"""The kNN member of a head: a similarity-weighted vote of the nearest training texts. Pure (torch).

The MLP, linear and TF-IDF members each learn one decision surface; a nearest-neighbour vote
instead reads the training texts themselves, so it catches a text that sits among a handful of
training examples the smooth members got wrong. Its vote, for a raw embedding ``x``:

    p_knn(c | x) ∝ sum over the k most cosine-similar training vectors v_i with label c of exp((cos(x, v_i) - 1) / temp)

and its "logits" are ``log(p_knn + FLOOR)`` (a label none of the k neighbours carries keeps a small
probability, so the head's member temperature and mixing stay finite). It is mixed with the other
members like any member (its own temperature and mixing weight, see :mod:`embedclf.heads.mlp`).

**Cost.** The similarities of a batch to every stored vector are one matrix product (BANKING77: 10,003
vectors x 384 dims, ~7.7 MFLOP per text). On a CPU with fast bfloat16 products (AVX-512 BF16 / AMX:
several times faster than float32) that product only *finds candidates*: the ``k + CANDIDATES_EXTRA``
best in bfloat16; their cosines are then computed again in float32 and the ``k`` best vote. Elsewhere the
product is float32 (:mod:`embedclf.heads.nearest`: torch's or ONNX Runtime's, whichever is faster here)
and already gives the exact cosines, so its ``k`` best vote directly. Both paths pick the same
neighbours unless a true neighbour ranks below ``k + CANDIDATES_EXTRA`` in bfloat16 (cosine error ~1e-3),
and score them in float32; the two scores of a neighbour differ only in the order of the dot product's
additions (~1e-7). Which path runs is decided once per process by timing both (:func:`use_bf16`).

Stored with the head's other weights, never pickled: ``knn.vectors`` (``[n_vectors, input_dim]``,
the L2-normalised training embeddings, float16: half the size, a cosine off by < 1e-3) and
``knn.labels`` (``[n_vectors]`` int64 class indices); the config holds
``{"kind": "knn-vote", "k": ..., "temp": ..., "n_vectors": ...}``.
"""

from __future__ import annotations

import torch
from torch import nn

from embedclf.heads.nearest import OrtSearch, TorchSearch, aligned, best_times, make_search, top_columns
from embedclf.heads.numerics import unit_rows
from embedclf.heads.oos import check_neighbour_config

KIND = "knn-vote"
KEYS = {"kind", "k", "temp", "n_vectors"}
#: rows scored at once (a chunk's similarity matrix is CHUNK x n_vectors float32)
CHUNK = 256
#: added to the vote before its log: the probability floor of a label no neighbour carries
FLOOR = 1e-4
#: candidates beyond k that the (possibly bfloat16) product passes on to the exact float32 rescoring
CANDIDATES_EXTRA = 10
#: bfloat16 candidates are used when their product takes at most this share of the float32 one's time
BF16_SPEEDUP = 0.5

_bf16: bool | None = None


def use_bf16() -> bool:
    """Whether bfloat16 products are markedly faster than float32 ones on this CPU (timed once per process)."""
    global _bf16
    if _bf16 is None:
        gen = torch.Generator().manual_seed(0)
        a, b = torch.randn(128, 384, generator=gen), torch.randn(384, 4096, generator=gen)
        try:
            a16, b16 = a.bfloat16(), b.bfloat16()
            t_bf16, t_f32 = best_times([lambda: a16 @ b16, lambda: a @ b], reps=3)
            _bf16 = t_bf16 <= BF16_SPEEDUP * t_f32
        except RuntimeError:  # no bfloat16 kernels
            _bf16 = False
    return _bf16


def check_config(cfg: object) -> dict:
    """The validated ``knn`` config (HeadLoadError, a ValueError, on anything else)."""
    return check_neighbour_config(cfg, "knn", KEYS, KIND, "temp", positive=True)


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
        self._table: torch.Tensor | TorchSearch | OrtSearch | None = None
        self._table_key: tuple[int, int] | None = None

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

    def _search_table(self) -> torch.Tensor | TorchSearch | OrtSearch:
        """The vectors for the candidate search when :func:`use_bf16` (bfloat16; the float16 buffer itself
        serves the exact rescoring), else the exact float32 search (:mod:`embedclf.heads.nearest`); kept until
        the buffer changes."""
        key = (self.vectors._version, self.vectors.data_ptr())
        if self._table is None or self._table_key != key:
            self._table = aligned(self.vectors.bfloat16()) if use_bf16() else make_search(self.vectors)
            self._table_key = key
        return self._table

    def neighbours(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 cosines ``[n, k]`` and indices of the ``k`` nearest stored vectors to unit rows ``z``."""
        table = self._search_table()
        k = min(self.k, len(self.vectors))
        if not isinstance(table, torch.Tensor):  # float32: the product's cosines are the exact ones
            return table.search(z, k)
        n = len(self.vectors)
        cand = top_columns(z.bfloat16() @ table.T, n, min(k + CANDIDATES_EXTRA, n))  # (the table is aligned)
        # the candidates' cosines again, in float32 from the stored vectors (as the float32 search computes them)
        # (index_select, not self.vectors[cand]: 8x faster on a [64, 20] index here, the same values)
        rows = self.vectors.index_select(0, cand.reshape(-1)).view(*cand.shape, -1).float()
        exact = torch.einsum("nd,nmd->nm", z, rows)
        top = torch.topk(exact, k, dim=1)
        return top.values, cand.gather(1, top.indices)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, num_labels]``: ``log(p_knn + FLOOR)`` for raw embeddings ``x``."""
        z = unit_rows(x)
        out = []
        for i in range(0, len(z), CHUNK):
            sims, idx = self.neighbours(z[i:i + CHUNK])
            w = torch.exp((sims - 1.0) / self.temp)
            votes = torch.zeros(len(sims), self.num_labels).scatter_add_(1, self.labels[idx], w)
            out.append(torch.log(votes / votes.sum(1, keepdim=True).clamp_min(1e-30) + FLOOR))
        return torch.cat(out) if out else torch.zeros(0, self.num_labels)
