"""The stored report: per-class rows, confusions, calibration before/after, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedclf.training.metrics import confusion_matrix, expected_calibration_error
from embedclf.training.quality import build_report, calibration, dense_confusion, softmax, sparse_confusion


def synthetic(seed: int = 0, n: int = 600, k: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 2.0
    return y, logits


def test_softmax_rows_sum_to_one_and_temperature_flattens():
    _, logits = synthetic()
    p1, p3 = softmax(logits), softmax(logits, 3.0)
    np.testing.assert_allclose(p1.sum(1), 1.0)
    assert (p3.max(1) < p1.max(1)).all()
    np.testing.assert_array_equal(p1.argmax(1), p3.argmax(1))


def test_sparse_confusion_round_trips():
    cm = np.array([[5, 0, 1], [0, 0, 0], [2, 0, 7]])
    cells = sparse_confusion(cm)
    assert sorted(cells) == [[0, 0, 5], [0, 2, 1], [2, 0, 2], [2, 2, 7]]
    np.testing.assert_array_equal(dense_confusion(cells, 3), cm)


def test_build_report_contents():
    y, logits = synthetic()
    labels = ["a", "b", "c", "d"]
    # unit Gaussian noise with the true class shifted by 2: the Bayes posterior is softmax(2 * logits)
    calibrated = softmax(logits * 2)
    overconfident = softmax(logits * 8)
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.5}]
    rep = build_report(labels, y, calibrated, overconfident, history=history, best_epoch=1, temperature=4.0)
    json.dumps(rep)  # storable as JSONB
    assert rep["labels"] == labels and rep["history"] == history and rep["best_epoch"] == 1
    assert [r["label"] for r in rep["per_class"]] == labels
    assert sum(r["support"] for r in rep["per_class"]) == len(y)
    cm = confusion_matrix(y, calibrated.argmax(1), 4)
    np.testing.assert_array_equal(dense_confusion(rep["confusion"], 4), cm)
    top = rep["confused_pairs"][0]
    off = cm.copy()
    np.fill_diagonal(off, 0)
    assert top["count"] == off.max()
    cal = rep["calibration"]
    assert cal["n_bins"] == 15 and len(cal["bins"]) == 15 and len(cal["bins_uncalibrated"]) == 15
    assert cal["ece"] == pytest.approx(expected_calibration_error(calibrated.max(1), calibrated.argmax(1) == y))
    # the x8 logits are overconfident: calibration (T=4 undoes it) must lower ECE
    assert cal["ece_uncalibrated"] > cal["ece"] + 0.05
    assert cal["temperature"] == 4.0


def test_calibration_of_a_calibrated_sampler_is_small():
    rng = np.random.default_rng(1)
    n, k = 5000, 3
    proba = rng.dirichlet(np.ones(k), n)
    y = np.array([rng.choice(k, p=p) for p in proba])  # labels drawn from the stated probabilities
    assert calibration(proba, y)["ece"] < 0.05
