"""Training loop for :class:`MLPHead` on precomputed embeddings.

Pure: numpy + torch. A stratified validation slice of the training data
drives early stopping (best epoch by validation accuracy, then loss) and the
temperature that calibrates the stored probabilities. The caller's held-out
test data is never looked at here.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.training.metrics import classification_report
from embedclf.training.split import LabelEncoder, stratified_split

EpochCallback = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class TrainParams:
    hidden_dim: int = 512
    num_layers: int = 3
    dropout: float = 0.5
    linear_skip: bool = True
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    val_fraction: float = 0.1
    patience: int = 15
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


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
) -> TrainResult:
    """Train a head on embeddings ``X`` [n, d] with string ``labels``.

    ``val`` = (embeddings, labels) is a validation set given by the caller (e.g.
    CLINC150's ``val``); without it a stratified ``val_fraction`` of ``X`` is held out.
    """
    start = time.perf_counter()
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) != len(labels):
        raise ValueError(f"X must be [n, d] with one label per row; got {X.shape} and {len(labels)} labels")
    encoder = LabelEncoder.fit(labels)
    y = encoder.encode(labels)
    torch.manual_seed(params.seed)
    gen = torch.Generator().manual_seed(params.seed)

    if val is None:
        tr_idx, va_idx = stratified_split(y, params.val_fraction, seed=params.seed)
        if len(va_idx) == 0:
            raise ValueError("training data too small for a validation split")
        Xt, yt = torch.from_numpy(X[tr_idx]), torch.from_numpy(y[tr_idx])
        Xv_np, yv_np = X[va_idx], y[va_idx]
    else:
        Xv_np = np.asarray(val[0], dtype=np.float32)
        unknown = sorted(set(val[1]) - set(encoder.labels))
        if unknown or len(Xv_np) != len(val[1]) or len(Xv_np) == 0:
            raise ValueError(f"validation set must be non-empty with known labels (unknown: {unknown[:5]})")
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        yv_np = encoder.encode(val[1])
    Xv, yv = torch.from_numpy(Xv_np), torch.from_numpy(yv_np)

    config = HeadConfig(
        input_dim=X.shape[1],
        num_labels=len(encoder.labels),
        hidden_dim=params.hidden_dim,
        num_layers=params.num_layers,
        dropout=params.dropout,
        linear_skip=params.linear_skip,
    )
    head = MLPHead(config)
    head.set_center(Xt)
    opt = torch.optim.AdamW(head.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(Xt) / params.batch_size))
    total_steps = params.epochs * steps_per_epoch
    if total_steps >= 4:
        # torch's OneCycleLR divides by zero when its warm-up ends at step 0 (10 steps, 10 %):
        # keep at least two warm-up steps
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=params.lr, total_steps=total_steps, pct_start=max(0.1, 2.0 / total_steps)
        )
    else:  # too few steps for a schedule
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=params.label_smoothing)

    # Picking the best epoch on a handful of validation texts picks noise (a 30-text slice
    # is 100 % right long before the model is trained); the one-cycle schedule anneals to
    # ~0, so with few validation texts the last epoch is the better choice.
    select = len(yv) >= MIN_CALIBRATION_EXAMPLES
    history: list[dict] = []
    best_key: tuple[float, float] | None = None
    best_state: dict | None = None
    best_epoch = 0
    for epoch in range(1, params.epochs + 1):
        head.train()
        perm = torch.randperm(len(Xt), generator=gen)
        total = 0.0
        for i in range(0, len(Xt), params.batch_size):
            b = perm[i : i + params.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(head(Xt[b]), yt[b])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        head.eval()
        with torch.no_grad():
            vlogits = head(Xv)
            vloss = float(nn.functional.cross_entropy(vlogits, yv))
            vacc = float((vlogits.argmax(1) == yv).float().mean())
        row = {"epoch": epoch, "train_loss": total / len(Xt), "val_loss": vloss, "val_accuracy": vacc}
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, params.epochs, row)
        key = (vacc, -vloss)
        if not select:  # too few validation texts to choose an epoch: keep the annealed end
            best_state, best_epoch = None, epoch
            continue
        if best_key is None or key > best_key:
            best_key, best_state, best_epoch = key, copy.deepcopy(head.state_dict()), epoch
        elif epoch - best_epoch >= params.patience:
            break

    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    with torch.no_grad():
        vlogits = head(Xv)
    temperature = fit_temperature(vlogits, yv)
    head.temperature.fill_(temperature)
    val_metrics = classification_report(head.predict_proba(Xv.numpy()), yv_np)
    return TrainResult(
        head=head,
        labels=list(encoder.labels),
        params=params,
        history=history,
        best_epoch=best_epoch,
        val_metrics=val_metrics,
        temperature=temperature,
        seconds=time.perf_counter() - start,
        val_logits=vlogits.numpy(),
        val_y=yv_np,
    )
