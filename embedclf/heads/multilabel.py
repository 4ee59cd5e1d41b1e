"""Multi-label heads: one sigmoid per label and a decision threshold per label.

Pure model file (torch + numpy). Like :class:`~embedclf.heads.mlp.MLPHead` the head
carries its input preprocessing (L2 normalisation, centring on the training mean) as
buffers, so a saved head reproduces its probabilities from the raw embedder output.

Members, each a one-vs-rest model with a sigmoid per label: an MLP over the preprocessed
embedding (with a linear skip path); with ``linear_member``, a one-vs-rest logistic
regression over the same input; with ``sparse`` (a TF-IDF featurizer's config, see
:mod:`embedclf.heads.tfidf`), a one-vs-rest logistic regression over the text's TF-IDF
features (it needs the texts, not only their embeddings; vocabulary and idf are stored
as tensors next to the weights, under ``tfidf.``). Their probabilities are mixed with the
stored ``member_weights`` (in the order mlp, linear, sparse):
``p = sum_k w_k * sigmoid(z_k)``. A label is predicted when ``p >= thresholds[label]``;
a text with no label over its threshold is an abstention.

The config carries ``head_type = "multi_label"`` so the store and the worker tell the
two kinds apart; a single-label config never has that key (strict loading keeps old
heads loading unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from embedclf.errors import HeadLoadError
from embedclf.heads.mldecide import HEAD_TYPE, decide, is_multi_label, label_rows
from embedclf.heads.mlp import ACTIVATIONS, DenseMembers
from embedclf.heads.numerics import Dropout
from embedclf.heads.sparse import check_precomputed
from embedclf.heads.tfidf import TfidfFeaturizer

__all__ = ["HEAD_TYPE", "MEMBERS", "MultiLabelConfig", "MultiLabelHead", "decide", "is_multi_label", "label_rows",
           "mix"]
#: member names in the order of ``member_weights`` (those the head has)
MEMBERS = ("mlp", "linear", "sparse")
#: prefix of the TF-IDF featurizer's tensors in the head's state dict
TFIDF_PREFIX = "tfidf."


@dataclass(frozen=True)
class MultiLabelConfig:
    input_dim: int
    num_labels: int
    head_type: str = HEAD_TYPE
    hidden_dim: int = 512
    #: number of Linear layers of the MLP member (1 = one-vs-rest logistic regression)
    num_layers: int = 2
    dropout: float = 0.3
    activation: str = "gelu"
    input_norm: bool = True
    #: a second member: one-vs-rest logistic regression, fitted on its own
    linear_member: bool = True
    #: mixing weights of the members' sigmoid probabilities (mlp[, linear]); they sum to 1
    member_weights: tuple[float, ...] = (1.0,)
    #: per-label decision thresholds on the mixed probability (chosen on validation data)
    thresholds: tuple[float, ...] = ()
    #: a sparse member over TF-IDF features: the featurizer's config (None: no sparse member)
    sparse: dict | None = None
    #: decision rule on top of the thresholds (mldecide.decide): at least / at most this many labels
    #: per text (0: no such rule; heads stored before these fields decide as before)
    min_labels: int = 0
    max_labels: int = 0

    def __post_init__(self) -> None:
        if self.head_type != HEAD_TYPE:
            raise ValueError(f"head_type must be {HEAD_TYPE!r}")
        if self.input_dim < 1 or self.num_labels < 2:
            raise ValueError("a head needs input_dim >= 1 and at least 2 labels")
        if self.num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.sparse is not None:
            object.__setattr__(self, "sparse", _canonical_parts(self.sparse))
        # JSON gives lists back: store tuples so the config stays hashable and comparable
        object.__setattr__(self, "member_weights", tuple(float(w) for w in self.member_weights))
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if len(self.member_weights) != self.num_members:
            raise ValueError(f"member_weights needs {self.num_members} weight(s), got {len(self.member_weights)}")
        if any(w < 0 for w in self.member_weights) or abs(sum(self.member_weights) - 1.0) > 1e-6:
            raise ValueError("member_weights must be >= 0 and sum to 1")
        if self.thresholds and len(self.thresholds) != self.num_labels:
            raise ValueError(f"thresholds needs one value per label ({self.num_labels}), got {len(self.thresholds)}")
        if any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError("thresholds must be in [0, 1]")
        if not (isinstance(self.min_labels, int) and isinstance(self.max_labels, int)
                and 0 <= self.min_labels <= self.num_labels and 0 <= self.max_labels <= self.num_labels
                and (not self.max_labels or self.min_labels <= self.max_labels)):
            raise ValueError("min_labels and max_labels must be integers in [0, num_labels] "
                             "(min <= max when max is set)")

    @property
    def num_members(self) -> int:
        return len(self.member_names)

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(m for m, on in zip(MEMBERS, (True, self.linear_member, self.sparse is not None)) if on)

    @property
    def sparse_features(self) -> int:
        if not self.sparse:
            return 0
        parts = self.sparse["parts"]  # an ordered list of parts, or (older featurizer configs) a name -> part object
        return sum(int(p["n_terms"]) for p in (parts.values() if isinstance(parts, dict) else parts))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["member_weights"] = list(self.member_weights)
        d["thresholds"] = list(self.thresholds)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> MultiLabelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise HeadLoadError(f"unknown multi-label head config keys: {sorted(unknown)}")
        return cls(**data)


def _canonical_parts(sparse: dict) -> dict:
    """The featurizer config with its parts in fitting order (word, then char).

    The featurizer's columns follow the order of ``parts`` in its config, and neither
    ``json.dumps(sort_keys=True)`` nor Postgres JSONB keeps that order (both put ``char``
    first): without this a stored sparse member would read permuted features.
    """
    from embedclf.heads.tfidf import PARTS

    parts = sparse.get("parts")
    if not isinstance(parts, dict):  # a list keeps its order through any JSON store
        return sparse
    order = [n for n in PARTS if n in parts] + [n for n in parts if n not in PARTS]
    return {**sparse, "parts": {n: parts[n] for n in order}}


class MultiLabelHead(DenseMembers):
    """``mlp`` (+ ``skip``) member and, with ``linear_member``, a ``linear`` member; sigmoid outputs."""

    multi_label = True
    # buffers (register_buffer), declared for the type checker
    center: torch.Tensor
    temperature: torch.Tensor
    member_temperature: torch.Tensor
    member_weight: torch.Tensor

    def __init__(self, config: MultiLabelConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("center", torch.zeros(config.input_dim))
        act = ACTIVATIONS[config.activation]
        layers: list[nn.Module] = []
        width = config.input_dim
        for _ in range(config.num_layers - 1):
            layers += [nn.Linear(width, config.hidden_dim), act(), Dropout(config.dropout)]
            width = config.hidden_dim
        layers.append(nn.Linear(width, config.num_labels))
        self.mlp = nn.Sequential(*layers)
        self.skip = (nn.Linear(config.input_dim, config.num_labels, bias=False)
                     if config.num_layers > 1 else None)
        self.linear: nn.Linear | None = None
        if config.linear_member:
            # zero start without drawing from torch's RNG: the MLP trains as it would alone
            self.linear = nn.utils.skip_init(nn.Linear, config.input_dim, config.num_labels)
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        self.sparse: nn.Linear | None = None
        #: the TF-IDF featurizer of the sparse member (set when fitted or loaded)
        self.featurizer: TfidfFeaturizer | None = None
        if config.sparse is not None:
            self.sparse = nn.utils.skip_init(nn.Linear, config.sparse_features, config.num_labels)
            nn.init.zeros_(self.sparse.weight)
            nn.init.zeros_(self.sparse.bias)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The weights, plus the featurizer's vocabulary and idf tensors (``tfidf.*``) with a sparse member."""
        out = super().state_dict(*args, **kwargs)
        if self.featurizer is not None:
            out.update({TFIDF_PREFIX + k: v for k, v in self.featurizer.to_tensors().items()})
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> Any:
        """Strict: a sparse member needs its featurizer tensors, a head without one accepts none."""
        state = dict(state_dict)
        tfidf = {k[len(TFIDF_PREFIX):]: state.pop(k) for k in list(state) if k.startswith(TFIDF_PREFIX)}
        if self.config.sparse is not None:
            self.featurizer = TfidfFeaturizer.from_tensors(self.config.sparse, tfidf)
            if self.featurizer.n_features != self.config.sparse_features:
                raise HeadLoadError("the TF-IDF featurizer does not match the sparse member's size")
        elif tfidf and strict:
            raise RuntimeError(f"unexpected TF-IDF tensors for a head without a sparse member: {sorted(tfidf)[:3]}")
        return super().load_state_dict(state, strict=strict, assign=assign)

    def sparse_logits(self, texts: Sequence[str]) -> torch.Tensor:
        """The sparse member's logits for ``texts`` (its TF-IDF features times its weights)."""
        if self.sparse is None or self.featurizer is None:
            raise ValueError("this head has no fitted sparse member")
        feats = self.featurizer.transform(list(texts))
        w = self.sparse.weight.detach().numpy()
        return torch.from_numpy(np.asarray(feats @ w.T, dtype=np.float32)) + self.sparse.bias.detach()

    def member_logits(self, x: torch.Tensor, texts: Sequence[str] | None = None,
                      sparse: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each member's logits; ``sparse``: the sparse member's, computed beforehand (:meth:`sparse_logits`)."""
        z = self.preprocess(x)
        out = [self._mlp(z)]
        if self.linear is not None:
            out.append(self.linear(z))
        if self.sparse is not None:
            if sparse is not None:
                out.append(check_precomputed(sparse, len(x)))
            elif texts is None or len(texts) != len(x):
                raise ValueError("a head with a sparse (TF-IDF) member needs the texts next to their embeddings")
            else:
                out.append(self.sparse_logits(texts))
        return out

    def forward(self, x: torch.Tensor, texts: Sequence[str] | None = None, *,
                sparse: torch.Tensor | None = None) -> torch.Tensor:
        """Mixed per-label probabilities (not logits) for raw embeddings ``x`` (and their ``texts``)."""
        return mix(self.member_logits(x, texts, sparse), self.config.member_weights)

    @property
    def needs_texts(self) -> bool:
        return self.sparse is not None

    @property
    def uses_texts(self) -> bool:
        """True when predictions need the texts too (a sparse member); the name single-label heads use."""
        return self.sparse is not None

    @torch.no_grad()
    def member_proba(self, x: np.ndarray | torch.Tensor, texts: Sequence[str] | None = None) -> list[np.ndarray]:
        """Each member's sigmoid probabilities, in :attr:`MultiLabelConfig.member_names` order."""
        with _eval(self):
            return [torch.sigmoid(z).numpy() for z in self.member_logits(self._check(x), texts)]

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray | torch.Tensor, texts: Sequence[str] | None = None, *,
                      sparse: torch.Tensor | None = None) -> np.ndarray:
        """Per-label probabilities, float32 ``[n, num_labels]`` (rows do not sum to 1); ``sparse``: the
        sparse member's logits computed beforehand, instead of ``texts``."""
        with _eval(self):
            return self.forward(self._check(x), texts, sparse=sparse).numpy()

    def thresholds(self) -> np.ndarray:
        t = self.config.thresholds
        return np.asarray(t if t else [0.5] * self.config.num_labels, dtype=np.float32)

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """Boolean ``[n, num_labels]`` from probabilities: thresholds and the stored min/max-labels rule."""
        return decide(proba, self.thresholds(), self.config.min_labels, self.config.max_labels)

    def predict(self, x: np.ndarray | torch.Tensor, texts: Sequence[str] | None = None) -> np.ndarray:
        """Boolean ``[n, num_labels]``: the labels over their thresholds (and the min/max-labels rule)."""
        return self.decide(self.predict_proba(x, texts))

    def _check(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        if t.ndim != 2 or t.shape[1] != self.config.input_dim:
            raise ValueError(f"expected embeddings of shape [n, {self.config.input_dim}], got {tuple(t.shape)}")
        return t


class _eval:
    """Eval mode for a block, restoring the previous mode."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.was = module, module.training

    def __enter__(self) -> None:
        if self.was:  # eval() walks every submodule: only when needed
            self.module.eval()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            self.module.train(True)


def mix(logits: list[torch.Tensor], weights: tuple[float, ...]) -> torch.Tensor:
    """``sum_k w_k * sigmoid(z_k)``."""
    out = torch.zeros_like(logits[0])
    for z, w in zip(logits, weights):
        if w:
            out = out + w * torch.sigmoid(z)
    return out
