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


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """``cm[i, j]`` = number of texts of true class ``i`` predicted as ``j``."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def per_class(cm: np.ndarray, labels: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per class from a confusion matrix.

    A class never predicted has precision 0 (not NaN) when it has support, so
    the row still shows the failure; a class with neither support nor
    predictions gets zeros throughout.
    """
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    support = cm.sum(axis=1).astype(float)
    rows = []
    for i, label in enumerate(labels):
        p = tp[i] / predicted[i] if predicted[i] else 0.0
        r = tp[i] / support[i] if support[i] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        rows.append({"label": label, "precision": p, "recall": r, "f1": f1, "support": int(support[i])})
    return rows


def confused_pairs(cm: np.ndarray, labels: list[str], k: int = 10) -> list[dict]:
    """The ``k`` largest off-diagonal cells: (true label, predicted label, count), largest first.

    Ties are broken by (true, predicted) index so the order is deterministic.
    Each entry also gives ``share``: the fraction of the true class's texts that went there.
    """
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    support = cm.sum(axis=1)
    out = []
    for f in flat:
        i, j = divmod(int(f), cm.shape[1])
        if off[i, j] <= 0:
            break
        out.append({"true": labels[i], "predicted": labels[j], "count": int(off[i, j]),
                    "share": float(off[i, j] / support[i])})
    return out


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> list[dict]:
    """Equal-width confidence bins over [0, 1]: count, mean confidence and accuracy per bin.

    A confidence of exactly 1.0 falls in the last bin; empty bins are kept
    (count 0, confidence and accuracy None) so plots show the whole range.
    """
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if confidence.shape != correct.shape:
        raise ValueError("confidence and correct must have the same shape")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        bins.append({
            "lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
            "confidence": float(confidence[m].mean()) if n else None,
            "accuracy": float(correct[m].mean()) if n else None,
        })
    return bins


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over equal-width bins (Guo et al., 2017)."""
    bins = reliability_bins(confidence, correct, n_bins)
    total = sum(b["count"] for b in bins)
    if total == 0:
        return float("nan")
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]) / total)
