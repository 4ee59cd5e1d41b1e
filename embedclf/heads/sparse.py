"""The sparse member of a hybrid head: a linear softmax model over TF-IDF features of the text. Pure.

It reads the texts, not the embeddings, so a head with this member needs the texts at
prediction time (the worker passes them along with the batch's embeddings). Its
weights are ordinary parameters (``weight`` [num_labels, n_features], ``bias``), stored
with the head's other weights; the :class:`~embedclf.heads.tfidf.TfidfFeaturizer`
(vocabulary, idf) is stored next to them under the ``tfidf.`` prefix (see
:mod:`embedclf.heads.checkpoint`). Logits are ``X @ weight.T + bias`` with X the sparse
TF-IDF matrix: a sparse product, no dense feature matrix is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from embedclf.errors import HeadLoadError
from embedclf.heads.tfidf import TfidfFeaturizer

#: prefix of the featurizer's tensors in a head's safetensors blob
TENSOR_PREFIX = "tfidf."


def n_features(tfidf_config: dict) -> int:
    """Columns of the features a featurizer with this config produces."""
    try:
        return sum(int(p["n_terms"]) for p in tfidf_config["parts"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise HeadLoadError(f"bad tfidf config in the head config: {exc!r}") from None


def check_precomputed(logits: torch.Tensor, rows: int) -> torch.Tensor:
    """``logits`` computed beforehand for ``rows`` texts (a head's ``sparse_logits``), checked for shape."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or len(logits) != rows:
        raise ValueError(f"precomputed TF-IDF logits must be a [{rows}, num_labels] tensor")
    return logits


class SparseMember(nn.Module):
    """Linear logits over TF-IDF features; ``featurizer`` must be attached before use."""

    def __init__(self, tfidf_config: dict, num_labels: int) -> None:
        super().__init__()
        self.tfidf_config = tfidf_config
        self.n_features = n_features(tfidf_config)
        self.weight = nn.Parameter(torch.zeros(num_labels, self.n_features))
        self.bias = nn.Parameter(torch.zeros(num_labels))
        self.featurizer: TfidfFeaturizer | None = None
        #: weight.T as a C-contiguous array (scipy copies a transposed view on every product), with the
        #: (version, address) of the weight it was made from
        self._weight_t: np.ndarray | None = None
        self._weight_t_key: tuple[int, int] | None = None

    def attach(self, featurizer: TfidfFeaturizer) -> None:
        if featurizer.n_features != self.n_features:
            raise ValueError(f"featurizer has {featurizer.n_features} features, the sparse member "
                             f"{self.n_features}")
        if featurizer.config() != self.tfidf_config:
            raise ValueError("featurizer config differs from the one in the head config")
        self.featurizer = featurizer

    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), num_labels]`` float32 logits (no gradient)."""
        if self.featurizer is None:
            raise ValueError("the sparse member has no featurizer attached")
        x = self.featurizer.transform(texts)
        key = (self.weight._version, self.weight.data_ptr())
        if self._weight_t is None or self._weight_t_key != key:
            self._weight_t = np.ascontiguousarray(self.weight.detach().numpy().T)
            self._weight_t_key = key
        with torch.no_grad():
            z = np.asarray(x @ self._weight_t, dtype=np.float32) + self.bias.detach().numpy()
        return torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
