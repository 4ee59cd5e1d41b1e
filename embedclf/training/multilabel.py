"""Training a :class:`~embedclf.heads.multilabel.MultiLabelHead` on precomputed embeddings. Pure.

* Targets are multi-hot; every member is trained with binary cross-entropy, positives of
  label ``j`` weighted by ``min((neg_j / pos_j) ** pos_weight_power, max_pos_weight)``
  (labels are very unbalanced: without weighting rare labels are never predicted).
* The MLP member: mini-batch AdamW with a one-cycle schedule; the epoch kept is the best by
  validation macro-F1 at per-label best thresholds (early stopping with ``patience``).
* The linear member: one-vs-rest logistic regression, full-batch L-BFGS (convex, deterministic),
  L2 strength ``1 / linear_c`` as in scikit-learn.
* With ``sparse_member``: one-vs-rest logistic regression over the texts' TF-IDF features
  (:mod:`embedclf.training.mlsparse`); it needs the texts, not only their embeddings.
* The members' probabilities are mixed with weights chosen on validation (``combine="tuned"``:
  every weight vector on a 0.1 grid of the simplex; ``"average"``: equal weights), then the
  per-label thresholds are chosen on the mixed validation probabilities
  (:func:`~embedclf.training.mlmetrics.choose_thresholds`).

Validation is the caller's ``val`` or a seeded random ``val_fraction`` of the training texts;
held-out test data is never seen here.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from embedclf.errors import DataError
from embedclf.heads.multilabel import MultiLabelConfig, MultiLabelHead, decide
from embedclf.training import mlmetrics
from embedclf.training.mlsparse import fit_featurizer, fit_sparse

EpochCallback = Callable[[int, int, dict], None]
COMBINE = ("tuned", "average")


@dataclass(frozen=True)
class MultiLabelParams:
    hidden_dim: int = 512
    num_layers: int = 2
    dropout: float = 0.3
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-2
    val_fraction: float = 0.1
    patience: int = 8
    seed: int = 0
    linear_member: bool = True
    linear_c: float = 10.0
    #: positives of label j weigh (neg_j / pos_j) ** pos_weight_power (0: unweighted), at most max_pos_weight
    pos_weight_power: float = 0.5
    max_pos_weight: float = 50.0
    #: validation positives a label needs for its own threshold (else the global one)
    min_positives: int = mlmetrics.DEFAULT_MIN_POSITIVES
    #: "tuned": member weights chosen on validation; "average": equal weights
    combine: str = "tuned"
    #: a third member over TF-IDF features of the texts (needs the texts); on by default: chosen with
    #: ``bench mlheads`` on GoEmotions' dev split (2-fold CV, never test), see docs/multilabel.md
    sparse_member: bool = True
    #: the sparse member's liblinear C (inverse L2 strength): 0.3 (was 10), chosen with ``bench mlheads`` by
    #: 3-fold CV on GoEmotions' train split (+2.2 ± 0.6 pt macro-F1, 3/3 folds; never test), see docs/multilabel.md
    sparse_c: float = 0.3
    #: vocabulary cap per TF-IDF analyzer (word, char_wb)
    sparse_max_features: int = 20_000
    #: decision rule stored with the head (see heads.mldecide.decide): at least / at most this many
    #: labels per text (0: none); the thresholds are chosen per label first, the rule applies on top.
    #: min_labels 1 (a text always gets its most probable label, no abstention): chosen with
    #: ``bench mlheads`` on GoEmotions' dev split (3-fold CV, +0.41 ± 0.20 pt macro-F1, 3/3 folds; never test)
    min_labels: int = 1
    max_labels: int = 0

    def __post_init__(self) -> None:
        if self.combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}")
        if self.pos_weight_power < 0 or self.max_pos_weight < 1:
            raise ValueError("pos_weight_power must be >= 0 and max_pos_weight >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must be in (0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MultiLabelResult:
    head: MultiLabelHead
    labels: list[str]
    params: MultiLabelParams
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    #: thresholds summary (global threshold, fallback labels), member weights and validation figures
    thresholds_info: dict = field(default_factory=dict)
    members: dict = field(default_factory=dict)
    val_metrics: dict = field(default_factory=dict)
    #: indices of the training rows used for validation (None: the caller's ``val``)
    val_index: np.ndarray | None = field(repr=False, default=None)
    val_proba: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    val_Y: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), dtype=bool))


def label_list(label_sets: Sequence[Sequence[str]]) -> list[str]:
    return sorted({label for s in label_sets for label in s})


def pos_weights(Y: np.ndarray, power: float, cap: float) -> np.ndarray:
    """Per-label weight of a positive example: ``min((neg / pos) ** power, cap)`` (1 without positives)."""
    pos = Y.sum(0).astype(np.float64)
    neg = len(Y) - pos
    w = np.where(pos > 0, (neg / np.maximum(pos, 1)) ** power, 1.0)
    return np.clip(w, 1.0, cap).astype(np.float32)


def val_score(proba: np.ndarray, Y: np.ndarray) -> float:
    """Mean over labels of each label's best validation F1 (the early-stopping criterion)."""
    return float(np.mean([mlmetrics.best_label_threshold(proba[:, j], Y[:, j])[1] for j in range(Y.shape[1])]))


def train_multilabel(
    X: np.ndarray,
    label_sets: Sequence[Sequence[str]],
    params: MultiLabelParams = MultiLabelParams(),
    on_epoch: EpochCallback | None = None,
    val: tuple[np.ndarray, Sequence[Sequence[str]]] | None = None,
    *,
    texts: Sequence[str] | None = None,
    val_texts: Sequence[str] | None = None,
) -> MultiLabelResult:
    """Train on embeddings ``X`` [n, d]; ``label_sets[i]`` holds text i's labels (at least one label overall).

    ``texts`` (and ``val_texts`` with ``val``) are the texts of ``X``: needed by the sparse member only.
    """
    start = time.perf_counter()
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) != len(label_sets):
        raise ValueError(f"X must be [n, d] with one label set per row; got {X.shape} and {len(label_sets)}")
    labels = label_list(label_sets)
    if len(labels) < 2:
        raise DataError(f"a multi-label head needs at least 2 distinct labels, got {labels}")
    Y = mlmetrics.multi_hot(label_sets, labels)
    torch.manual_seed(params.seed)
    gen = torch.Generator().manual_seed(params.seed)
    if params.sparse_member and (texts is None or len(texts) != len(X) or (val is not None and (
            val_texts is None or len(val_texts) != len(val[0])))):
        raise ValueError("the sparse member needs the training (and validation) texts")
    val_index = None
    tr_texts: list[str] = []
    va_texts: list[str] = []
    if val is None:
        perm = np.random.default_rng(params.seed).permutation(len(X))
        n_val = int(round(params.val_fraction * len(X)))
        if n_val < 1 or n_val >= len(X):
            raise DataError("training data too small for a validation split")
        val_index, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        Xt, Yt, Xv, Yv = X[tr], Y[tr], X[val_index], Y[val_index]
        if params.sparse_member:
            assert texts is not None  # checked on entry: a sparse member needs the texts
            tr_texts, va_texts = [texts[i] for i in tr], [texts[i] for i in val_index]
    else:
        Xv = np.asarray(val[0], dtype=np.float32)
        unknown = sorted({label for s in val[1] for label in s} - set(labels))
        if unknown or len(Xv) != len(val[1]) or len(Xv) == 0:
            raise DataError(f"validation set must be non-empty with known labels (unknown: {unknown[:5]})")
        Xt, Yt, Yv = X, Y, mlmetrics.multi_hot(val[1], labels)
        if params.sparse_member:
            assert texts is not None and val_texts is not None  # checked on entry
            tr_texts, va_texts = list(texts), list(val_texts)
    featurizer = fit_featurizer(tr_texts, params.sparse_max_features) if params.sparse_member else None

    linear = params.linear_member and params.num_layers > 1
    k = 1 + int(linear) + int(featurizer is not None)
    config = MultiLabelConfig(
        input_dim=X.shape[1], num_labels=len(labels), hidden_dim=params.hidden_dim, num_layers=params.num_layers,
        dropout=params.dropout, linear_member=linear, member_weights=tuple([1.0 / k] * k),
        sparse=featurizer.config() if featurizer is not None else None,
    )
    head = MultiLabelHead(config)
    head.featurizer = featurizer  # part of the state from the start (epoch snapshots restore it too)
    xt, yt = torch.from_numpy(Xt), torch.from_numpy(Yt.astype(np.float32))
    head.set_center(xt)
    pw = torch.from_numpy(pos_weights(Yt, params.pos_weight_power, params.max_pos_weight))
    history, best_epoch = _fit_mlp(head, xt, yt, Xv, Yv, pw, params, gen, on_epoch)
    members: dict[str, dict[str, Any]] = {"mlp": {"best_epoch": best_epoch, "epochs_run": len(history)}}
    if head.linear is not None:
        members["linear"] = {"lbfgs_iterations": fit_linear(head, xt, yt, pw, params.linear_c)}
    if featurizer is not None:
        members["sparse"] = fit_sparse(head, featurizer, tr_texts, Yt, pw.numpy(), params.sparse_c)
    members_proba = head.member_proba(Xv, va_texts if featurizer is not None else None)
    for name, p in zip(config.member_names, members_proba):
        members[name]["val_macro_f1_best_cuts"] = val_score(p, Yv)
    weights, grid = choose_weights(members_proba, Yv, params.combine, params.min_positives)
    val_proba: np.ndarray = np.sum([w * p for w, p in zip(weights, members_proba)], axis=0)
    thresholds, info = mlmetrics.choose_thresholds(val_proba, Yv, params.min_positives)
    head.config = replace(config, member_weights=weights, thresholds=tuple(float(t) for t in thresholds),
                          min_labels=params.min_labels, max_labels=params.max_labels)
    head.eval()
    val_report = mlmetrics.report(Yv, head.decide(val_proba), labels, thresholds)
    info.update(member_weights=list(weights), weight_grid=grid, fallback_labels=[labels[j] for j in info["fallback"]])
    return MultiLabelResult(
        head=head, labels=labels, params=params, history=history, best_epoch=best_epoch,
        seconds=time.perf_counter() - start, thresholds_info=info, members=members,
        val_metrics={k: v for k, v in val_report.items() if k != "per_label"},
        val_index=val_index, val_proba=np.asarray(val_proba, dtype=np.float32), val_Y=Yv,
    )


def simplex_grid(k: int, steps: int = 10) -> list[tuple[float, ...]]:
    """Every weight vector of ``k`` members in multiples of ``1 / steps`` that sums to 1 (first weight falling)."""
    out: list[tuple[float, ...]] = []

    def rec(prefix: list[int], left: int, slots: int) -> None:
        if slots == 1:
            out.append(tuple(round(v / steps, 6) for v in (*prefix, left)))
            return
        for i in range(left, -1, -1):
            rec([*prefix, i], left - i, slots - 1)

    rec([], steps, k)
    return out


def choose_weights(members_proba: list[np.ndarray], Yv: np.ndarray, combine: str,
                   min_positives: int) -> tuple[tuple[float, ...], dict]:
    """Member weights: one member → (1,); "average" → equal; "tuned" → the weight vector on the 0.1
    simplex grid with the best validation macro-F1 at the thresholds the rule would choose (ties: the
    vector nearest to equal weights)."""
    k = len(members_proba)
    if k == 1:
        return (1.0,), {}
    if combine == "average":
        return tuple([1.0 / k] * k), {}
    scores: dict[tuple[float, ...], float] = {}
    for w in simplex_grid(k):
        p: np.ndarray = np.sum([wi * pi for wi, pi in zip(w, members_proba)], axis=0)
        t, _ = mlmetrics.choose_thresholds(p, Yv, min_positives)
        scores[w] = mlmetrics.macro_f1(Yv, decide(p, t))
    best = max(scores, key=lambda w: (round(scores[w], 6), -sum((wi - 1.0 / k) ** 2 for wi in w)))
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:5]
    return best, {"/".join(f"{v:.1f}" for v in w): round(s, 4) for w, s in top}


def _fit_mlp(head: MultiLabelHead, xt: torch.Tensor, yt: torch.Tensor, Xv: np.ndarray, Yv: np.ndarray,
             pw: torch.Tensor, p: MultiLabelParams, gen: torch.Generator,
             on_epoch: EpochCallback | None) -> tuple[list[dict], int]:
    """Train the MLP member; the head ends at the best epoch. Returns (history, best epoch)."""
    params = [prm for n, prm in head.named_parameters() if not n.startswith("linear.")]
    opt = torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay, fused=True)
    steps = p.epochs * max(1, math.ceil(len(xt) / p.batch_size))
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, total_steps=steps,
                                                 pct_start=max(0.1, 2.0 / steps))
             if steps >= 4 else torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pw)
    xv = torch.from_numpy(np.asarray(Xv, dtype=np.float32))
    yv = torch.from_numpy(Yv.astype(np.float32))
    history: list[dict] = []
    best_score, best_state, best_epoch = -1.0, None, 0
    for epoch in range(1, p.epochs + 1):
        head.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), p.batch_size):
            b = perm[i : i + p.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(head.mlp_logits(xt[b]), yt[b])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        head.eval()
        with torch.no_grad():
            vlogits = head.mlp_logits(xv)
            vloss = float(loss_fn(vlogits, yv))
        score = val_score(torch.sigmoid(vlogits).numpy(), Yv)
        row = {"epoch": epoch, "train_loss": total / len(xt), "val_loss": vloss, "val_macro_f1": score}
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, p.epochs, row)
        if score > best_score:
            best_score, best_state, best_epoch = score, copy.deepcopy(head.state_dict()), epoch
        elif epoch - best_epoch >= p.patience:
            break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return history, best_epoch


def fit_linear(head: MultiLabelHead, xt: torch.Tensor, yt: torch.Tensor, pw: torch.Tensor, c: float,
               max_rounds: int = 20) -> int:
    """One-vs-rest logistic regression on the preprocessed input: weighted BCE + ``||W||^2 / (2 c n)``."""
    if head.linear is None:
        raise ValueError("this head has no linear member")
    if not c > 0:
        raise ValueError(f"linear_c must be > 0, got {c}")
    lin = head.linear
    with torch.no_grad():
        z = head.preprocess(xt)
        lin.weight.zero_()
        lin.bias.zero_()
    lam = 0.5 / (c * len(xt))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pw, reduction="sum")
    n = len(xt)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=100, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        # per text: the sum over labels, as one-vs-rest fits each label on every text
        loss = loss_fn(lin(z), yt) / n + lam * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    previous = math.inf
    for _ in range(max_rounds):
        loss = float(opt.step(closure).detach())
        if previous - loss < 1e-7:
            break
        previous = loss
    return int(opt.state[lin.weight]["n_iter"])
