"""Training loop for :class:`MLPHead` on precomputed embeddings.

Pure: numpy + torch. A stratified validation slice of the training data drives early stopping (best
epoch by validation accuracy, then loss) and the temperatures that calibrate the stored probabilities.
The caller's held-out test data is never looked at here.

By default the head has two members fitted one after the other on the same split: the MLP (mini-batch
AdamW, best epoch on validation), then a softmax regression (``linear_member``: L2, full-batch L-BFGS).
Each member gets its own temperature; the head averages their calibrated
probabilities and a final temperature is fitted on that mix.

With ``tfidf_member`` (a hybrid head) a third member reads the texts: TF-IDF features
fitted on the training part only, a linear model over them (:mod:`embedclf.training.sparse`),
its own temperature; the members are then mixed with weights that are equal
(``member_weights="equal"``) or chosen on the validation split (``"fit"``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from embedclf.errors import DataError
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.training.split import LabelEncoder, stratified_split

EpochCallback = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class TrainParams:
    hidden_dim: int = 512
    num_layers: int = 3
    #: 0.3 (was 0.5): chosen by 3-fold CV on BANKING77 train (docs/training.md, "dropout 0.3")
    dropout: float = 0.3
    linear_skip: bool = True
    #: epochs, batch size + lr and tfidf_epochs: chosen by 3-fold CV on BANKING77 train (docs/training.md,
    #: "30 MLP epochs"): within noise of 60 epochs / batches of 64 / 20 SGD passes, in a third of the time
    epochs: int = 30
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    val_fraction: float = 0.1
    patience: int = 15
    seed: int = 0
    #: also fit a softmax-regression member and average the members' calibrated probabilities
    linear_member: bool = True
    #: the linear member's inverse L2 strength (scikit-learn's C), L-BFGS; 30 (was 10): CV, docs/training.md
    linear_c: float = 30.0
    #: a hybrid head: also fit a linear member over TF-IDF features of the texts
    tfidf_member: bool = False
    #: vocabulary cap per analyzer (word, char) of the TF-IDF member
    tfidf_max_features: int = 20_000
    #: the TF-IDF member's L2 strength and passes (SGD, logistic loss)
    tfidf_alpha: float = 1e-5
    tfidf_epochs: int = 5
    #: how members are mixed in a hybrid head: "equal" weights, "fit" (min. validation NLL on a grid),
    #: or fixed weights "w_mlp/w_linear/w_tfidf" (one per member, summing to 1)
    member_weights: str = "equal"
    #: after the validation split has chosen epochs, temperatures and weights, refit the convex members
    #: (linear, TF-IDF) on training + validation texts (only when the validation slice comes from the
    #: training data; the MLP keeps its chosen epoch)
    refit: bool = False
    #: with refit, also retrain the MLP from scratch on training + validation rows for the chosen epochs
    refit_mlp: bool = False
    #: a kNN member (heads/knn.py): "on", "off", or "auto" (kept when it lowers the validation NLL); the k nearest
    #: training texts vote, weights exp((cos - 1) / knn_temp); it gets knn_weight of an equal or fixed mix
    knn_member: str = "off"
    knn_k: int = 10
    knn_temp: float = 0.05
    knn_weight: float = 0.3

    def __post_init__(self) -> None:
        if self.member_weights not in ("equal", "fit"):
            fixed_weights(self.member_weights)  # raises ValueError on anything else
        if self.knn_member not in ("on", "off", "auto") or self.knn_k < 1 or not self.knn_temp > 0 \
                or not 0 < self.knn_weight < 1:
            raise ValueError("knn_member must be on/off/auto, knn_k >= 1, knn_temp > 0 and knn_weight in (0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


def fixed_weights(spec: str) -> tuple[float, ...] | None:
    """``"0.25/0.25/0.5"`` -> the weights (each >= 0, summing to 1); ``"equal"``/``"fit"`` -> None."""
    if spec in ("equal", "fit"):
        return None
    try:
        w = tuple(float(v) for v in spec.split("/"))
    except ValueError:
        w = ()
    if len(w) < 2 or min(w) < 0 or abs(sum(w) - 1.0) > 1e-6:
        raise ValueError(f"member_weights must be 'equal', 'fit' or weights like '0.25/0.25/0.5' summing to 1, "
                         f"got {spec!r}")
    return w


@dataclass
class TrainResult:
    head: MLPHead
    labels: list[str]
    params: TrainParams
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    val_metrics: dict = field(default_factory=dict)
    temperature: float = 1.0
    seconds: float = 0.0
    #: validation logits (before temperature) and true class indices, for calibration and abstention
    val_logits: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    val_y: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: per member ("mlp", "linear"): best_epoch, epochs run, val_accuracy, temperature
    members: dict = field(default_factory=dict)
    #: whether the head has a kNN member and why ({"mode", "kept"}, with "auto" both validation NLLs)
    knn_choice: dict = field(default_factory=dict)


#: temperature scaling needs enough validation examples to be trusted
MIN_CALIBRATION_EXAMPLES = 100
TEMPERATURE_RANGE = (0.25, 4.0)


def fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Temperature minimising validation NLL, within :data:`TEMPERATURE_RANGE`.

    With fewer than :data:`MIN_CALIBRATION_EXAMPLES` validation examples the
    fit is not trusted (a perfectly classified small set drives it to zero,
    i.e. to fake certainty) and 1.0 is returned.
    """
    if len(y) < MIN_CALIBRATION_EXAMPLES:
        return 1.0
    lo, hi = TEMPERATURE_RANGE
    def nll(t: float) -> float:
        return float(nn.functional.cross_entropy(logits / t, y))

    grid = np.exp(np.linspace(math.log(lo), math.log(hi), 121))
    best = min(grid, key=nll)
    fine = np.exp(np.linspace(math.log(best) - 0.06, math.log(best) + 0.06, 25))
    return float(np.clip(min(fine, key=nll), lo, hi))


def train_head(
    X: np.ndarray,
    labels: Sequence[str],
    params: TrainParams = TrainParams(),
    on_epoch: EpochCallback | None = None,
    val: tuple[np.ndarray, Sequence[str]] | None = None,
    texts: Sequence[str] | None = None,
    val_texts: Sequence[str] | None = None,
) -> TrainResult:
    """Train a head on embeddings ``X`` [n, d] with string ``labels``.

    ``val`` = (embeddings, labels) is a validation set given by the caller (e.g.
    CLINC150's ``val``); without it a stratified ``val_fraction`` of ``X`` is held out.
    ``texts`` (one per row of ``X``; with ``val``, also ``val_texts``) are needed for
    ``tfidf_member``.

    Two stages: :func:`train_dense` (the MLP and linear members), then
    :func:`embedclf.training.finish.finish_head` (the TF-IDF member, mixing, temperatures).
    ``bench heads`` runs the second stage several times on one first stage.
    """
    from embedclf.training.finish import finish_head

    return finish_head(train_dense(X, labels, params, on_epoch, val, texts, val_texts), params)


@dataclass
class DenseStage:
    """A head whose dense members are trained, with the split they saw (the input of ``finish_head``).

    ``finish_head`` never modifies it, so one stage can be finished several ways.
    """
    head: MLPHead
    labels: list[str]
    params: TrainParams
    Xt: torch.Tensor
    yt: torch.Tensor
    Xv: torch.Tensor
    yv: torch.Tensor
    tr_texts: list[str]
    va_texts: list[str]
    history: list[dict]
    members: dict
    #: True when the validation texts are the caller's (``val``), not a slice of the training data
    external_val: bool
    start: float


def train_dense(
    X: np.ndarray,
    labels: Sequence[str],
    params: TrainParams = TrainParams(),
    on_epoch: EpochCallback | None = None,
    val: tuple[np.ndarray, Sequence[str]] | None = None,
    texts: Sequence[str] | None = None,
    val_texts: Sequence[str] | None = None,
) -> DenseStage:
    """The first stage of :func:`train_head`: split, then fit the MLP and (``linear_member``) linear members.

    Texts are checked and split here when ``params.tfidf_member`` is set (the second stage needs them);
    nothing here depends on the TF-IDF or mixing parameters, so dense members train identically with or
    without a TF-IDF member.
    """
    start = time.perf_counter()
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) != len(labels):
        raise ValueError(f"X must be [n, d] with one label per row; got {X.shape} and {len(labels)} labels")
    encoder = LabelEncoder.fit(labels)
    y = encoder.encode(labels)
    torch.manual_seed(params.seed)
    gen = torch.Generator().manual_seed(params.seed)

    if params.tfidf_member and (texts is None or len(texts) != len(X)
                                or (val is not None and (val_texts is None or len(val_texts) != len(val[0])))):
        raise ValueError("a TF-IDF member needs the texts: one per training row (and per validation row)")
    tr_texts: list[str] = []
    va_texts: list[str] = []
    if val is None:
        tr_idx, va_idx = stratified_split(y, params.val_fraction, seed=params.seed)
        if len(va_idx) == 0:
            raise DataError("training data too small for a validation split")
        Xt, yt = torch.from_numpy(X[tr_idx]), torch.from_numpy(y[tr_idx])
        Xv_np, yv_np = X[va_idx], y[va_idx]
        if texts is not None and len(texts) == len(X):
            tr_texts, va_texts = [texts[i] for i in tr_idx], [texts[i] for i in va_idx]
    else:
        Xv_np = np.asarray(val[0], dtype=np.float32)
        unknown = sorted(set(val[1]) - set(encoder.labels))
        if unknown or len(Xv_np) != len(val[1]) or len(Xv_np) == 0:
            raise DataError(f"validation set must be non-empty with known labels (unknown: {unknown[:5]})")
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        yv_np = encoder.encode(val[1])
        if texts is not None and val_texts is not None and len(texts) == len(X) and len(val_texts) == len(Xv_np):
            tr_texts, va_texts = list(texts), list(val_texts)
    Xv, yv = torch.from_numpy(Xv_np), torch.from_numpy(yv_np)

    config = HeadConfig(
        input_dim=X.shape[1],
        num_labels=len(encoder.labels),
        hidden_dim=params.hidden_dim,
        num_layers=params.num_layers,
        dropout=params.dropout,
        linear_skip=params.linear_skip,
        # with one layer the MLP already is a softmax regression
        linear_member=params.linear_member and params.num_layers > 1,
    )
    head = MLPHead(config)
    head.set_center(Xt)
    fit = MlpFit(head, Xt, yt, Xv, yv, params, gen)
    mlp_params = [p for n, p in head.named_parameters() if not n.startswith(("linear.", "sparse."))]
    history = fit.run(head.mlp_logits, mlp_params, params.lr, params.weight_decay, params.label_smoothing, on_epoch)
    with torch.no_grad():
        members = {"mlp": member_summary(head.mlp_logits(Xv), yv) | {"best_epoch": fit.best_epoch,
                                                                      "epochs_run": len(history)}}
    if head.linear is not None:
        iterations = fit_linear(head, Xt, yt, params.linear_c)
        with torch.no_grad():
            members["linear"] = member_summary(head.linear_logits(Xv), yv) | {"lbfgs_iterations": iterations}
    head.eval()
    return DenseStage(head=head, labels=list(encoder.labels), params=params, Xt=Xt, yt=yt, Xv=Xv, yv=yv,
                      tr_texts=tr_texts, va_texts=va_texts, history=history, members=members,
                      external_val=val is not None, start=start)


def member_summary(logits: torch.Tensor, yv: torch.Tensor) -> dict:
    """A trained member on validation: its accuracy and its own temperature."""
    logits = logits.detach()
    return {"val_accuracy": float((logits.argmax(1) == yv).float().mean()), "temperature": fit_temperature(logits, yv)}


class MlpFit:
    """The MLP member's training loop: AdamW, one-cycle LR, early stopping on the validation split."""

    def __init__(self, head: MLPHead, Xt: torch.Tensor, yt: torch.Tensor, Xv: torch.Tensor, yv: torch.Tensor,
                 params: TrainParams, gen: torch.Generator, select: bool | None = None) -> None:
        self.head, self.Xt, self.yt, self.Xv, self.yv = head, Xt, yt, Xv, yv
        self.params, self.gen, self.select = params, gen, select  # select None: when validation is big enough
        self.best_epoch = 0

    def run(self, forward: Callable[[torch.Tensor], torch.Tensor], parameters: list, lr: float,
            weight_decay: float, label_smoothing: float, on_epoch: EpochCallback | None) -> list[dict]:
        """Train ``parameters`` through ``forward``; the head ends at the chosen epoch. Returns the history.

        Only ``parameters`` move; a restored best epoch restores the whole head's state,
        which is the same for every other parameter.
        """
        p, head, Xt, yt, Xv, yv = self.params, self.head, self.Xt, self.yt, self.Xv, self.yv
        batch, lr = effective_batch(len(Xt), p.batch_size, lr)
        opt = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)
        steps_per_epoch = max(1, math.ceil(len(Xt) / batch))
        total_steps = p.epochs * steps_per_epoch
        if total_steps >= 4:
            # torch's OneCycleLR divides by zero when its warm-up ends at step 0 (10 steps, 10 %):
            # keep at least two warm-up steps
            sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=lr, total_steps=total_steps, pct_start=max(0.1, 2.0 / total_steps)
            )
        else:  # too few steps for a schedule
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

        # Picking the best epoch on a handful of validation texts picks noise (a 30-text slice
        # is 100 % right long before the model is trained); the one-cycle schedule anneals to
        # ~0, so with few validation texts the last epoch is the better choice.
        select = len(yv) >= MIN_CALIBRATION_EXAMPLES if self.select is None else self.select
        history: list[dict] = []
        best_key: tuple[float, float] | None = None
        best_state: dict | None = None
        self.best_epoch = 0
        for epoch in range(1, p.epochs + 1):
            head.train()
            perm = torch.randperm(len(Xt), generator=self.gen)
            total = 0.0
            for i in range(0, len(Xt), batch):
                b = perm[i : i + batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(forward(Xt[b]), yt[b])
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(b)
            head.eval()
            with torch.no_grad():
                vlogits = forward(Xv)
                vloss = float(nn.functional.cross_entropy(vlogits, yv))
                vacc = float((vlogits.argmax(1) == yv).float().mean())
            row = {"epoch": epoch, "train_loss": total / len(Xt), "val_loss": vloss, "val_accuracy": vacc}
            history.append(row)
            if on_epoch is not None:
                on_epoch(epoch, p.epochs, row)
            key = (vacc, -vloss)
            if not select:  # too few validation texts to choose an epoch: keep the annealed end
                best_state, self.best_epoch = None, epoch
                continue
            if best_key is None or key > best_key:
                best_key, best_state, self.best_epoch = key, copy.deepcopy(head.state_dict()), epoch
            elif epoch - self.best_epoch >= p.patience:
                break
        if best_state is not None:
            head.load_state_dict(best_state)
        head.eval()
        return history


#: a small training set still gets this many mini-batches an epoch (see :func:`effective_batch`)
MIN_STEPS_PER_EPOCH = 16


def effective_batch(n: int, batch_size: int, lr: float) -> tuple[int, float]:
    """The mini-batch size and learning rate used on ``n`` training rows.

    ``batch_size`` and ``lr`` are tuned for thousands of texts (BANKING77: ~35 steps an epoch at 256).
    A set too small for :data:`MIN_STEPS_PER_EPOCH` batches of that size gets smaller batches
    (``n // 16``, at least 8) and a learning rate scaled with the square root of the batch size, so a
    300-text head still takes a few hundred optimiser steps.
    """
    batch = min(batch_size, max(8, n // MIN_STEPS_PER_EPOCH))
    return batch, lr * math.sqrt(batch / batch_size)


def fit_linear(head: MLPHead, Xt: torch.Tensor, yt: torch.Tensor, c: float, max_rounds: int = 20) -> int:
    """Fit ``head.linear`` as multinomial logistic regression on the head's preprocessed input.

    Minimises mean cross-entropy + ``||W||^2 / (2 c n)`` (scikit-learn's objective with
    ``C = c``, bias not penalised) with full-batch L-BFGS from zero: convex and
    deterministic, so no validation epoch is chosen. Returns the L-BFGS iterations used.
    """
    if head.linear is None:
        raise ValueError("this head has no linear member")
    if not c > 0:
        raise ValueError(f"linear_c must be > 0, got {c}")
    lin = head.linear
    with torch.no_grad():
        z = head.preprocess(Xt)
        lin.weight.zero_()
        lin.bias.zero_()
    lam = 0.5 / (c * len(Xt))
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=100, tolerance_grad=1e-7,
                            tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(lin(z), yt) + lam * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    previous = math.inf
    for _ in range(max_rounds):  # each step runs up to max_iter iterations; stop once the loss settles
        loss = float(opt.step(closure).detach())
        if previous - loss < 1e-7:
            break
        previous = loss
    return int(opt.state[lin.weight]["n_iter"])
