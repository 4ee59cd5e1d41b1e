"""Hyper-parameter search with Optuna over precomputed embeddings. Pure: arrays in, params out.

Every trial trains a head with :func:`train_head` on the same data and the same stratified
validation slice (``base.val_fraction``, ``base.seed``), and is scored on that slice:
validation accuracy, ties broken by lower validation log-loss. The caller's held-out test
split is never seen. Fields the search tries are only those :class:`TrainParams` has.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from embedclf.errors import DataError
from embedclf.training.trainer import TrainParams, TrainResult, train_head

TrialCallback = Callable[[dict], None]

#: the search space; a key is tried only if TrainParams has that field
SPACE = {
    "num_layers": ("int", 1, 3),  # 1 = multinomial logistic regression on the normalised embedding
    "hidden_dim": ("choice", (256, 512, 1024)),
    "dropout": ("float", 0.0, 0.6),
    "lr": ("log", 2e-4, 5e-3),
    "weight_decay": ("log", 1e-4, 1e-1),
    "label_smoothing": ("float", 0.0, 0.2),
    "epochs": ("epochs",),
    "linear_member": ("choice", (True, False)),  # the averaged softmax-regression member (needs num_layers > 1)
    "linear_c": ("log", 0.3, 100.0),
}


@dataclass
class SearchResult:
    best: TrainParams
    best_value: float
    best_trial: int
    trials: list[dict]
    #: the best trial's trained head (same params and seed as ``best``: no need to train it again)
    best_result: TrainResult
    seconds: float

    def to_dict(self) -> dict:
        """What is stored in the version's ``train_params["search"]``."""
        return {
            "n_trials": len(self.trials),
            "objective": "val_accuracy (ties: lower val_log_loss)",
            "best_trial": self.best_trial,
            "best_val_accuracy": round(self.best_value, 4),
            "seconds": round(self.seconds, 1),
            "trials": self.trials,
        }


def suggest(trial: Any, base: TrainParams) -> TrainParams:
    """TrainParams for one Optuna trial: ``base`` with the searched fields replaced."""
    have = {f.name for f in fields(TrainParams)}
    values: dict = {}
    for name, spec in SPACE.items():
        if name not in have:
            continue
        kind = spec[0]
        if name in ("hidden_dim", "dropout", "linear_member") and values.get("num_layers") == 1:
            continue  # no hidden layer: these do nothing (and the head is its own linear member)
        if name == "linear_c" and not values.get("linear_member", False):
            continue
        if kind == "int":
            values[name] = trial.suggest_int(name, spec[1], spec[2])
        elif kind == "choice":
            values[name] = trial.suggest_categorical(name, list(spec[1]))  # type: ignore[arg-type]
        elif kind == "float":
            values[name] = trial.suggest_float(name, spec[1], spec[2])
        elif kind == "log":
            values[name] = trial.suggest_float(name, spec[1], spec[2], log=True)
        elif kind == "epochs":
            hi = max(base.epochs, 10)
            values[name] = trial.suggest_int(name, max(5, hi // 4), hi, step=5 if hi >= 20 else 1)
    return replace(base, **values)


def search_params(
    X: np.ndarray,
    labels: Sequence[str],
    n_trials: int,
    base: TrainParams = TrainParams(),
    *,
    on_trial: TrialCallback | None = None,
    texts: Sequence[str] | None = None,
) -> SearchResult:
    """Run ``n_trials`` Optuna (TPE, seeded with ``base.seed``) trials; return the best params.

    ``texts`` (one per row of ``X``) are needed when ``base`` has a TF-IDF member.
    """
    import optuna

    if n_trials < 1:
        raise ValueError("n_trials must be >= 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    trials: list[dict] = []
    best: dict = {}

    def objective(trial: Any) -> float:
        params = suggest(trial, base)
        result = train_head(X, labels, params, texts=texts)
        acc = float(result.val_metrics["accuracy"])
        loss = float(result.val_metrics.get("log_loss", 0.0))
        value = acc - 1e-4 * min(loss, 100.0)  # accuracy first; log-loss only breaks ties
        row = {"trial": trial.number, **{k: v for k, v in trial.params.items()},
               "val_accuracy": round(acc, 4), "val_log_loss": round(loss, 4),
               "epochs_run": len(result.history), "seconds": round(result.seconds, 2)}
        trials.append(row)
        if not best or value > best["value"]:
            best.update(value=value, trial=trial.number, params=params, result=result, acc=acc)
        if on_trial is not None:
            on_trial(row)
        return value

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=base.seed))
    study.optimize(objective, n_trials=n_trials)
    if not best or not math.isfinite(best["value"]):
        raise DataError("hyper-parameter search found no usable trial")
    return SearchResult(best=best["params"], best_value=best["acc"], best_trial=best["trial"], trials=trials,
                        best_result=best["result"], seconds=time.perf_counter() - start)
