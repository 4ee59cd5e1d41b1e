"""Metrics over probability matrices, checked against hand computations and sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score
from sklearn.metrics import log_loss as sk_log_loss

from embedclf.training.metrics import (
    accuracy,
    classification_report,
    macro_f1,
    map_at_k,
    top_k_accuracy,
)

# true class at rank 1, 2 and 4 respectively
PROBA = np.array(
    [
        [0.6, 0.3, 0.1, 0.0],  # y=0 -> rank 1
        [0.5, 0.3, 0.15, 0.05],  # y=1 -> rank 2
        [0.4, 0.3, 0.2, 0.1],  # y=3 -> rank 4
    ]
)
Y = np.array([0, 1, 3])


def test_map3_hand_computed():
    assert map_at_k(PROBA, Y, 3) == pytest.approx((1 + 1 / 2 + 0) / 3)


def test_map_at_k_depends_on_k():
    # with k=4 the rank-4 row counts 1/4; with k=1 only the first row counts
    assert map_at_k(PROBA, Y, 4) == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)
    assert map_at_k(PROBA, Y, 1) == pytest.approx(1 / 3)


def test_top3_accuracy_hand_computed():
    assert top_k_accuracy(PROBA, Y, 3) == pytest.approx(2 / 3)
    assert top_k_accuracy(PROBA, Y, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(PROBA, Y, 4) == pytest.approx(1.0)


def test_ties_are_broken_by_class_index():
    proba = np.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2], [0.2, 0.4, 0.4]])
    # row 0: true class 0 ties with class 1 and comes first -> rank 1
    # row 1: true class 1 ties with class 0, which comes first -> rank 2
    # row 2: true class 2 ties with class 1 -> rank 2
    y = np.array([0, 1, 2])
    assert map_at_k(proba, y, 3) == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert top_k_accuracy(proba, y, 1) == pytest.approx(1 / 3)


def test_all_equal_probabilities_rank_by_index():
    proba = np.full((4, 4), 0.25)
    y = np.array([0, 1, 2, 3])  # ranks 1, 2, 3, 4
    assert map_at_k(proba, y, 3) == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)
    assert top_k_accuracy(proba, y, 3) == pytest.approx(3 / 4)


def test_top1_accuracy_agrees_with_argmax_accuracy_even_with_ties():
    rng = np.random.default_rng(0)
    # coarse quantisation produces many ties
    proba = rng.integers(0, 4, size=(500, 6)).astype(float) + 1e-9
    proba /= proba.sum(axis=1, keepdims=True)
    y = rng.integers(0, 6, size=500)
    assert top_k_accuracy(proba, y, 1) == pytest.approx(accuracy(y, proba.argmax(axis=1)))


def test_map_and_topk_match_brute_force_on_random_data():
    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(7), size=300)
    y = rng.integers(0, 7, size=300)
    order = np.argsort(-proba, axis=1, kind="stable")
    ranks = np.array([int(np.flatnonzero(order[i] == y[i])[0]) + 1 for i in range(len(y))])
    for k in (1, 3, 5):
        assert map_at_k(proba, y, k) == pytest.approx(np.mean([1 / r if r <= k else 0 for r in ranks]))
        assert top_k_accuracy(proba, y, k) == pytest.approx(np.mean(ranks <= k))


def test_accuracy_basic_and_empty():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(0.75)
    assert math.isnan(accuracy([], []))


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_matches_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n_labels = 6
    y_true = rng.integers(0, n_labels, size=200)
    # mostly right, sometimes wrong, so per-class F1 varies
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, n_labels, size=200))
    expected = f1_score(y_true, y_pred, average="macro")
    assert macro_f1(y_true, y_pred) == pytest.approx(expected)
    assert macro_f1(y_true, y_pred, n_labels) == pytest.approx(expected)


def test_macro_f1_ignores_classes_absent_from_truth_and_prediction():
    # class 3 never occurs: like sklearn, it must not drag the mean down with a 0
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 2, 2, 0])
    expected = f1_score(y_true, y_pred, average="macro")
    assert macro_f1(y_true, y_pred, num_labels=4) == pytest.approx(expected)
    # hand: class0 tp1 fp1 fn1 -> 1/2; class1 tp1 fp1 fn0 -> 2/3; class2 tp2 fp0 fn1 -> 4/5
    assert expected == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)


def test_macro_f1_counts_predicted_only_class_as_zero():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 2, 1, 1])  # class 2 predicted but never true -> F1 0
    assert macro_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_perfect_predictions():
    y = np.array([0, 1, 2, 1])
    proba = np.eye(3)[y]
    rep = classification_report(proba, y)
    assert rep["accuracy"] == 1.0
    assert rep["macro_f1"] == 1.0
    assert rep["map3"] == 1.0
    assert rep["top3_accuracy"] == 1.0
    assert rep["log_loss"] == pytest.approx(0.0, abs=1e-9)


def test_classification_report_matches_components_and_sklearn_log_loss():
    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(5), size=120)
    y = rng.integers(0, 5, size=120)
    rep = classification_report(proba, y)
    assert set(rep) == {"accuracy", "macro_f1", "map3", "top3_accuracy", "log_loss"}
    assert rep["accuracy"] == pytest.approx(accuracy(y, proba.argmax(1)))
    assert rep["macro_f1"] == pytest.approx(f1_score(y, proba.argmax(1), average="macro"))
    assert rep["map3"] == pytest.approx(map_at_k(proba, y, 3))
    assert rep["top3_accuracy"] == pytest.approx(top_k_accuracy(proba, y, 3))
    assert rep["log_loss"] == pytest.approx(sk_log_loss(y, proba, labels=list(range(5))))
    assert all(isinstance(v, float) for v in rep.values())


def test_log_loss_is_finite_for_zero_probability_of_true_class():
    proba = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([1, 1])
    rep = classification_report(proba, y)
    assert math.isfinite(rep["log_loss"])
    assert rep["log_loss"] > 5  # -log(1e-12)/2 ~ 13.8


# ---- per-class figures, confused pairs, calibration (ECE / reliability bins) ----

from sklearn.metrics import precision_recall_fscore_support  # noqa: E402

from embedclf.training.metrics import (  # noqa: E402
    confused_pairs,
    confusion_matrix,
    expected_calibration_error,
    per_class,
    reliability_bins,
)


def test_per_class_matches_sklearn():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 5, 400)
    y_pred = np.where(rng.random(400) < 0.7, y_true, rng.integers(0, 5, 400))
    labels = list("abcde")
    rows = per_class(confusion_matrix(y_true, y_pred, 5), labels)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(5), zero_division=0)
    assert [row["label"] for row in rows] == labels
    np.testing.assert_allclose([row["precision"] for row in rows], p)
    np.testing.assert_allclose([row["recall"] for row in rows], r)
    np.testing.assert_allclose([row["f1"] for row in rows], f)
    assert [row["support"] for row in rows] == list(s)


def test_per_class_never_predicted_class_scores_zero():
    rows = per_class(confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 0]), 2), ["x", "y"])
    assert rows[1] == {"label": "y", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert rows[0]["precision"] == pytest.approx(1 / 3) and rows[0]["recall"] == 1.0


def test_confused_pairs_largest_off_diagonal_first():
    cm = np.array([[50, 7, 0], [1, 40, 3], [9, 0, 20]])
    pairs = confused_pairs(cm, ["a", "b", "c"], k=3)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("c", "a", 9), ("a", "b", 7), ("b", "c", 3)]
    assert pairs[0]["share"] == pytest.approx(9 / 29)
    # never more pairs than non-zero off-diagonal cells, diagonal never listed
    assert len(confused_pairs(cm, ["a", "b", "c"], k=50)) == 4
    assert confused_pairs(np.diag([3, 4]), ["a", "b"]) == []


def test_reliability_bins_hand_computed():
    conf = np.array([0.05, 0.5, 0.55, 0.95, 1.0])
    correct = np.array([0, 1, 0, 1, 1])
    bins = reliability_bins(conf, correct, n_bins=10)
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 5
    assert bins[0]["count"] == 1 and bins[0]["accuracy"] == 0.0
    assert bins[5]["count"] == 2 and bins[5]["confidence"] == pytest.approx(0.525) and bins[5]["accuracy"] == 0.5
    assert bins[9]["count"] == 2 and bins[9]["accuracy"] == 1.0  # 1.0 falls in the last bin
    assert bins[3]["count"] == 0 and bins[3]["accuracy"] is None
    assert bins[0]["lo"] == 0.0 and bins[-1]["hi"] == 1.0


def test_ece_hand_computed_and_bounds():
    conf = np.array([0.05, 0.5, 0.55, 0.95, 1.0])
    correct = np.array([0, 1, 0, 1, 1])
    # bins: {0.05: acc 0}, {0.5, 0.55: acc 0.5}, {0.95, 1.0: acc 1}
    expected = (1 * 0.05 + 2 * abs(0.5 - 0.525) + 2 * abs(1 - 0.975)) / 5
    assert expected_calibration_error(conf, correct, 10) == pytest.approx(expected)
    # perfectly calibrated in every bin -> 0; always confident and always wrong -> ~1
    assert expected_calibration_error(np.full(4, 0.75), np.array([1, 1, 1, 0]), 15) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(3, 0.999), np.zeros(3), 15) == pytest.approx(0.999)


def test_ece_default_uses_15_bins():
    rng = np.random.default_rng(0)
    conf = rng.random(1000)
    correct = rng.random(1000) < conf
    assert expected_calibration_error(conf, correct) == expected_calibration_error(conf, correct, 15)
    assert expected_calibration_error(conf, correct) != expected_calibration_error(conf, correct, 5)
    assert expected_calibration_error(conf, correct) < 0.06  # sampled from a calibrated model
