"""The classification head: a small MLP over frozen embeddings.

Pure model file (torch + numpy only). The head carries its own input
preprocessing (L2 normalisation, centring on the training mean) and an output
temperature as buffers, so a saved head reproduces its probabilities exactly
from the raw embedder output.

With ``linear_member`` the head is a two-member ensemble: the MLP and a
separately trained softmax regression over the same preprocessed input. Each
member is calibrated by its own temperature, their probabilities are averaged
and the mix gets the head's final temperature:
``p = softmax(log(mean_k softmax(z_k / t_k)) / T)``. With one member this is
exactly ``softmax(z / T)``.

With ``tfidf`` (a hybrid head) one more member reads the texts themselves: a softmax
regression over TF-IDF features (:mod:`embedclf.heads.sparse`). Such a head needs
``texts`` next to the embeddings when it predicts, and mixes its calibrated members
with stored weights ``w_k`` (``member_weight``, summing to 1):
``p = softmax(log(sum_k w_k softmax(z_k / t_k)) / T)``. Heads without it are computed
exactly as before.

With ``knn`` one more member votes with the nearest training texts (:mod:`embedclf.heads.knn`), mixed
by stored weights too. Heads without it are computed exactly as before.

With ``oos_score`` the head also stores an out-of-scope score over the embedding (``oos``,
:mod:`embedclf.heads.oos`): it does not change the probabilities, only the confidence its
abstention threshold applies to (:mod:`embedclf.heads.abstain`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from embedclf.errors import HeadLoadError
from embedclf.heads import knn as knn_member
from embedclf.heads.numerics import Dropout, flush_tiny, top_indices
from embedclf.heads.oos import KnnScore, check_config, make_config
from embedclf.heads.sparse import SparseMember, check_precomputed

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


@dataclass(frozen=True)
class HeadConfig:
    input_dim: int
    num_labels: int
    hidden_dim: int = 512
    #: number of Linear layers (1 = multinomial logistic regression)
    num_layers: int = 3
    dropout: float = 0.2
    activation: str = "gelu"
    #: L2-normalise inputs and subtract the training mean before the MLP
    input_norm: bool = True
    #: add a linear (logistic-regression) path from the input to the logits
    linear_skip: bool = True
    #: abstain (no label) when the top calibrated probability is below this; None = always answer
    abstain_threshold: float | None = None
    #: a trained label that means "out of scope": predicting it is an abstention too
    oos_label: str | None = None
    #: a second member, a softmax regression trained on its own; calibrated probabilities are averaged
    linear_member: bool = False
    #: a TF-IDF sparse member (the featurizer's config, see heads/tfidf.py); None = embeddings only
    tfidf: dict | None = None
    #: a kNN member voting with the nearest training texts (see heads/knn.py); None = no such member
    knn: dict | None = None
    #: an out-of-scope score discounting the confidence the threshold applies to (see heads/oos.py); None = p_max
    oos_score: dict | None = None

    def __post_init__(self) -> None:
        if self.input_dim < 1 or self.num_labels < 2:
            raise ValueError("a head needs input_dim >= 1 and at least 2 labels")
        if self.num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.abstain_threshold is not None and not 0.0 <= self.abstain_threshold <= 1.0:
            raise ValueError("abstain_threshold must be in [0, 1]")
        if self.tfidf is not None and not isinstance(self.tfidf, dict):
            raise ValueError("tfidf must be a featurizer config (an object) or null")
        if self.oos_score is not None:
            check_config(self.oos_score)
        if self.knn is not None:
            knn_member.check_config(self.knn)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HeadConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise HeadLoadError(f"unknown head config keys: {sorted(unknown)}")
        return cls(**data)


class DenseMembers(nn.Module):
    """The embedding side every head type shares: input normalisation and centring, the MLP (+ skip)
    member and the optional softmax-regression member. Subclasses build ``mlp``, ``skip``, ``linear``
    and the ``center`` buffer; their ``config`` has ``input_norm``."""

    config: Any
    center: torch.Tensor
    mlp: nn.Sequential
    skip: nn.Linear | None
    linear: nn.Linear | None

    def set_center(self, x: torch.Tensor) -> None:
        """Fit the input centring on training embeddings (already un-normalised)."""
        with torch.no_grad():
            self.center.copy_(self._normalize(x).mean(dim=0))

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.config.input_norm:
            return x
        return nn.functional.normalize(x, dim=-1)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """The members' input: L2-normalised and centred (with ``input_norm``), tiny values set to 0
        (:func:`~embedclf.heads.numerics.flush_tiny`: keeps the products off the CPU's slow subnormal path)."""
        if not self.config.input_norm:
            return flush_tiny(x)
        return flush_tiny(self._normalize(x) - self.center)

    def _mlp(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(z)
        if self.skip is not None:
            logits = logits + self.skip(z)
        return logits

    def mlp_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP member's logits for raw embeddings ``x``."""
        return self._mlp(self.preprocess(x))

    def linear_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax-regression member's logits (only with ``linear_member``)."""
        if self.linear is None:
            raise ValueError("this head has no linear member")
        return self.linear(self.preprocess(x))


class MLPHead(DenseMembers):
    """The MLP (``mlp`` + optional ``skip``), with ``linear_member`` a ``linear`` member, with ``tfidf`` a
    ``sparse`` member over the texts, with ``knn`` a ``knn`` member (a vote of the nearest training texts)."""

    # buffers (register_buffer), declared for the type checker
    center: torch.Tensor
    temperature: torch.Tensor
    member_temperature: torch.Tensor
    member_weight: torch.Tensor

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("center", torch.zeros(config.input_dim))
        self.register_buffer("temperature", torch.ones(()))
        act = ACTIVATIONS[config.activation]
        layers: list[nn.Module] = []
        width = config.input_dim
        for _ in range(config.num_layers - 1):
            layers += [nn.Linear(width, config.hidden_dim), act(), Dropout(config.dropout)]
            width = config.hidden_dim
        layers.append(nn.Linear(width, config.num_labels))
        self.mlp = nn.Sequential(*layers)
        self.skip = (
            nn.Linear(config.input_dim, config.num_labels, bias=False)
            if config.linear_skip and config.num_layers > 1
            else None
        )
        self.linear: nn.Linear | None = None
        if config.linear_member:
            # zero start (fit_linear starts from zero too), drawing nothing from torch's RNG:
            # the MLP member then trains exactly as it would alone (same dropout masks)
            self.linear = nn.utils.skip_init(nn.Linear, config.input_dim, config.num_labels)
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        self.sparse: SparseMember | None = None
        if config.tfidf is not None:
            self.sparse = SparseMember(config.tfidf, config.num_labels)
        self.knn: knn_member.KnnMember | None = None
        if config.knn is not None:
            self.knn = knn_member.KnnMember(config.knn, config.input_dim, config.num_labels)
        if self.num_members > 1:
            #: per-member calibration, fitted on validation data: [mlp, linear?, sparse?]
            self.register_buffer("member_temperature", torch.ones(self.num_members))
        self.oos: KnnScore | None = None
        if config.oos_score is not None:
            self.oos = KnnScore(config.oos_score, config.input_dim)
        if self.weighted:
            #: the members' mixing weights (sum 1), chosen on validation data; with a TF-IDF or kNN member only
            self.register_buffer("member_weight", torch.full((self.num_members,), 1.0 / self.num_members))

    @property
    def num_members(self) -> int:
        return 1 + (self.linear is not None) + (self.sparse is not None) + (self.knn is not None)

    @property
    def member_names(self) -> list[str]:
        return (["mlp"] + ["linear"] * (self.linear is not None) + ["tfidf"] * (self.sparse is not None)
                + ["knn"] * (self.knn is not None))

    @property
    def weighted(self) -> bool:
        """True when the members are mixed by stored weights (a TF-IDF or kNN member), not a plain average."""
        return self.sparse is not None or self.knn is not None

    @property
    def uses_texts(self) -> bool:
        """True when predictions need the texts too (a TF-IDF member)."""
        return self.sparse is not None

    def sparse_logits(self, texts: Sequence[str]) -> torch.Tensor:
        """The TF-IDF member's logits for ``texts`` (only with ``tfidf``)."""
        if self.sparse is None:
            raise ValueError("this head has no TF-IDF member")
        return self.sparse.logits(texts)

    def member_logits(self, x: torch.Tensor, texts: Sequence[str] | None = None,
                      sparse: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each member's logits in :attr:`member_names` order (the input is preprocessed once).

        ``sparse``: the TF-IDF member's logits for these rows, computed beforehand (:meth:`sparse_logits`
        of their texts, e.g. while the embeddings were being computed); then ``texts`` are not needed."""
        z = self.preprocess(x)
        out = [self._mlp(z)]
        if self.linear is not None:
            out.append(self.linear(z))
        if self.sparse is not None:
            if sparse is not None:
                out.append(check_precomputed(sparse, len(x)))
            elif texts is None or len(texts) != len(x):
                raise ValueError("this head has a TF-IDF member: pass the texts, one per embedding row")
            else:
                out.append(self.sparse.logits(texts))
        if self.knn is not None:
            out.append(self.knn.logits(x))
        return out

    def mix(self, zs: Sequence[torch.Tensor], *, member_temperatures: bool = True) -> torch.Tensor:
        """Log of the members' mixed probabilities (each at its own temperature unless disabled)."""
        if len(zs) == 1:
            return zs[0]
        temps = self.member_temperature if member_temperatures else torch.ones(len(zs))
        logp = torch.stack([torch.log_softmax(z / t, dim=-1) for z, t in zip(zs, temps)])
        if not self.weighted:  # MLP + linear heads: a plain average, exactly as stored heads expect
            return torch.logsumexp(logp, dim=0) - math.log(len(zs))
        return torch.logsumexp(logp + torch.log(self.member_weight)[:, None, None], dim=0)

    def forward(self, x: torch.Tensor, texts: Sequence[str] | None = None, *,
                member_temperatures: bool = True, sparse: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (before the final temperature) for raw embeddings ``x`` (and their ``texts``).

        One member: its logits. More: the log of the members' mixed probabilities, each
        member at its own temperature (``member_temperatures=False``: uncalibrated members).
        """
        return self.mix(self.member_logits(x, texts, sparse), member_temperatures=member_temperatures)

    def set_oos_score(self, x: np.ndarray | torch.Tensor, *, k: int, beta: float) -> None:
        """Add (replace) the out-of-scope score (:mod:`embedclf.heads.oos`): raw embeddings ``x`` of the
        in-scope training texts, ``k`` neighbours, ``beta``; recorded in the config."""
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        cfg = make_config(k, beta, len(x))
        score = KnnScore(cfg, self.config.input_dim)
        score.set_vectors(x)
        self.oos = score
        self.config = replace(self.config, oos_score=cfg)

    def set_knn(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> None:
        """Store (replace) the kNN member's training vectors: raw embeddings ``x`` and their class indices
        ``y``; its ``k`` and ``temp`` stay, ``n_vectors`` in the config becomes ``len(x)``."""
        if self.knn is None:
            raise ValueError("this head has no kNN member")
        cfg = knn_member.make_config(self.knn.k, self.knn.temp, len(x))
        member = knn_member.KnnMember(cfg, self.config.input_dim, self.config.num_labels)
        member.set_vectors(torch.as_tensor(np.asarray(x, dtype=np.float32)), torch.as_tensor(np.asarray(y)))
        self.knn = member
        self.config = replace(self.config, knn=cfg)

    @torch.no_grad()
    def oos_discount(self, x: np.ndarray | torch.Tensor) -> np.ndarray | None:
        """Per row, the factor the OOS score puts on the top probability before the threshold; None without one."""
        if self.oos is None:
            return None
        return self.oos.discount(torch.as_tensor(np.asarray(x, dtype=np.float32)))

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray | torch.Tensor, texts: Sequence[str] | None = None, *,
                      sparse: torch.Tensor | None = None) -> np.ndarray:
        """Calibrated class probabilities, float32 ``[n, num_labels]``.

        ``texts`` (one per row) are needed when :attr:`uses_texts`, ignored otherwise; or instead of
        them ``sparse``, the TF-IDF member's logits of those texts (:meth:`sparse_logits`).
        """
        was_training = self.training
        if was_training:  # (eval() walks every submodule: not on every worker batch)
            self.eval()
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float32))
            if t.ndim != 2 or t.shape[1] != self.config.input_dim:
                raise ValueError(
                    f"expected embeddings of shape [n, {self.config.input_dim}], got {tuple(t.shape)}"
                )
            logits = self.forward(t, texts if self.uses_texts else None, sparse=sparse) / self.temperature
            return torch.softmax(logits, dim=-1).numpy()
        finally:
            if was_training:
                self.train(True)


def top_k(proba: np.ndarray, labels: list[str], k: int = 3) -> list[list[tuple[str, float]]]:
    """The ``k`` best (label, probability) pairs per row, best first."""
    idx = top_indices(proba, k)
    return [[(labels[j], float(proba[i, j])) for j in row] for i, row in enumerate(idx)]
