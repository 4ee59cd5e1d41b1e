"""The stored evaluation report of a head version. Pure (numpy).

Everything ``embedclf heads report`` needs to print and plot a version later
is kept in one JSON-able dict stored with the version (``heads.metrics``
under ``"report"``): per-class figures, the most-confused pairs, calibration
before/after temperature scaling with the reliability bins, the training
history and the non-zero cells of the confusion matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedclf.training.metrics import (
    confused_pairs,
    confusion_matrix,
    expected_calibration_error,
    per_class,
    reliability_bins,
)

ECE_BINS = 15
TOP_CONFUSED = 10
REPORT_FORMAT = 1


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def calibration(proba: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> dict:
    """ECE and reliability bins of the top-1 confidence."""
    proba, y = np.asarray(proba), np.asarray(y)
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    return {"ece": expected_calibration_error(conf, correct, n_bins), "bins": reliability_bins(conf, correct, n_bins)}


def sparse_confusion(cm: np.ndarray) -> list[list[int]]:
    """Non-zero cells as ``[true, predicted, count]`` (a 150-label matrix is mostly zeros)."""
    i, j = np.nonzero(cm)
    return [[int(a), int(b), int(cm[a, b])] for a, b in zip(i, j)]


def dense_confusion(cells: Sequence[Sequence[int]], n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    for a, b, c in cells:
        cm[a, b] = c
    return cm


def build_report(
    labels: Sequence[str],
    y_test: np.ndarray,
    proba: np.ndarray,
    proba_uncalibrated: np.ndarray,
    *,
    history: Sequence[dict] = (),
    best_epoch: int = 0,
    temperature: float = 1.0,
    members: dict | None = None,
) -> dict:
    """The full report over the in-scope test texts (``proba`` is the calibrated output)."""
    labels = list(labels)
    y_test = np.asarray(y_test)
    cm = confusion_matrix(y_test, np.asarray(proba).argmax(axis=1), len(labels))
    after = calibration(proba, y_test)
    before = calibration(proba_uncalibrated, y_test)
    return {
        "format": REPORT_FORMAT,
        "labels": labels,
        "per_class": per_class(cm, labels),
        "confused_pairs": confused_pairs(cm, labels, TOP_CONFUSED),
        "confusion": sparse_confusion(cm),
        "calibration": {
            "temperature": float(temperature),
            "n_bins": ECE_BINS,
            "ece": after["ece"],
            "ece_uncalibrated": before["ece"],
            "bins": after["bins"],
            "bins_uncalibrated": before["bins"],
        },
        "history": [dict(h) for h in history],
        "best_epoch": int(best_epoch),
        #: per ensemble member (mlp, linear): validation accuracy, own temperature, ...
        "members": {k: dict(v) for k, v in (members or {}).items()},
    }
