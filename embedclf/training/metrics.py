"""Classification metrics over probability matrices (numpy only)."""

from __future__ import annotations

import numpy as np


def _ranks(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1-based rank of the true class in each row (ties broken by class index)."""
    true_p = proba[np.arange(len(y)), y]
    higher = (proba > true_p[:, None]).sum(axis=1)
    tied_before = ((proba == true_p[:, None]) & (np.arange(proba.shape[1])[None, :] < y[:, None])).sum(axis=1)
    return higher + tied_before + 1


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int | None = None) -> float:
    """Mean F1 over the classes that occur in ``y_true`` or ``y_pred``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = num_labels or int(max(y_true.max(initial=0), y_pred.max(initial=0)) + 1)
    f1s = []
    for c in range(n):
        tp = int(((y_pred == c) & (y_true == c)).sum())
        fp = int(((y_pred == c) & (y_true != c)).sum())
        fn = int(((y_pred != c) & (y_true == c)).sum())
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else float("nan")


def map_at_k(proba: np.ndarray, y_true: np.ndarray, k: int = 3) -> float:
    """Mean average precision at k with one relevant label: mean of 1/rank if rank <= k."""
    ranks = _ranks(np.asarray(proba), np.asarray(y_true))
    return float(np.where(ranks <= k, 1.0 / ranks, 0.0).mean())


def top_k_accuracy(proba: np.ndarray, y_true: np.ndarray, k: int = 3) -> float:
    ranks = _ranks(np.asarray(proba), np.asarray(y_true))
    return float((ranks <= k).mean())


def classification_report(proba: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """The standard figures every evaluation prints."""
    proba = np.asarray(proba)
    y_true = np.asarray(y_true)
    y_pred = proba.argmax(axis=1)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, proba.shape[1]),
        "map3": map_at_k(proba, y_true, 3),
        "top3_accuracy": top_k_accuracy(proba, y_true, 3),
        "log_loss": float(-np.log(np.clip(proba[np.arange(len(y_true)), y_true], 1e-12, 1.0)).mean()),
    }
