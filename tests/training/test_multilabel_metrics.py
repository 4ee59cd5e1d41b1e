"""Multi-label metrics against scikit-learn, and the per-label threshold rule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score

from embedclf.training import mlmetrics


def _random_case(seed: int, n: int = 40, L: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    Y = rng.random((n, L)) < rng.uniform(0.05, 0.5, L)
    P = np.where(rng.random((n, L)) < 0.7, Y, ~Y)  # noisy copy of the truth
    return Y, P


@pytest.mark.parametrize("seed", range(6))
def test_averages_match_sklearn(seed):
    Y, P = _random_case(seed)
    P[:, 0] = False  # a label never predicted: F1 0
    assert mlmetrics.macro_f1(Y, P) == pytest.approx(f1_score(Y, P, average="macro", zero_division=0))
    assert mlmetrics.micro_f1(Y, P) == pytest.approx(f1_score(Y, P, average="micro", zero_division=0))
    assert mlmetrics.samples_jaccard(Y, P) == pytest.approx(
        jaccard_score(Y, P, average="samples", zero_division=1))
    np.testing.assert_allclose(mlmetrics.per_label_f1(Y, P), f1_score(Y, P, average=None, zero_division=0))


def test_report_rows_cardinality_and_empty_rows():
    Y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
    P = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 0]], dtype=bool)
    r = mlmetrics.report(Y, P, ["a", "b", "c"], np.array([0.1, 0.2, 0.3]))
    assert r["cardinality_true"] == pytest.approx(1.0) and r["cardinality_pred"] == pytest.approx(1.0)
    assert r["no_label_share"] == pytest.approx(1 / 3)
    # rows: 1/1, 1/3, empty vs empty = 1
    assert r["samples_jaccard"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    a, b, c = r["per_label"]
    assert (a["precision"], a["recall"], a["f1"], a["support"], a["threshold"]) == (1.0, 1.0, 1.0, 2, 0.1)
    assert b["recall"] == 0.0 and b["f1"] == 0.0 and c["precision"] == 0.0 and c["predicted"] == 1
    assert r["exact_match"] == pytest.approx(2 / 3)


def test_best_label_threshold_is_the_best_cut_by_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.random(60) < 0.3
        p = np.clip(np.where(y, 0.6, 0.4) + rng.normal(0, 0.25, 60), 0, 1).round(2)  # rounded: ties
        t, f1 = mlmetrics.best_label_threshold(p, y)
        brute = max(f1_score(y, p >= c, zero_division=0) for c in np.unique(p))
        assert f1 == pytest.approx(brute)
        assert f1_score(y, p >= t, zero_division=0) == pytest.approx(f1)  # the threshold reproduces it


def test_best_label_threshold_without_positives():
    assert mlmetrics.best_label_threshold(np.array([0.2, 0.9]), np.array([False, False])) == (0.5, 0.0)


def test_choose_thresholds_falls_back_to_the_global_one_for_rare_labels():
    rng = np.random.default_rng(0)
    n = 400
    Y = np.zeros((n, 3), dtype=bool)
    Y[:, 0] = rng.random(n) < 0.3
    Y[:, 1] = rng.random(n) < 0.3
    Y[:5, 2] = True  # 5 positives: rare
    proba = np.clip(Y * 0.5 + rng.random((n, 3)) * 0.5, 0, 1)
    proba[:, 1] = np.clip(Y[:, 1] * 0.2 + rng.random(n) * 0.7, 0, 1)  # a label with another scale
    t, info = mlmetrics.choose_thresholds(proba, Y, min_positives=10)
    assert info["fallback"] == {2: "5 validation positives < 10"}
    assert t[2] == info["global_threshold"]
    for j in (0, 1):
        assert t[j] == pytest.approx(mlmetrics.best_label_threshold(proba[:, j], Y[:, j])[0])
    g, _ = mlmetrics.global_threshold(proba, Y)
    assert g == info["global_threshold"] and 0 < g < 1
    t_all, info_all = mlmetrics.choose_thresholds(proba, Y, min_positives=1)
    assert info_all["fallback"] == {} and t_all[2] != info["global_threshold"]


def test_multi_hot_rejects_unknown_labels():
    Y = mlmetrics.multi_hot([["a"], ["a", "b"], []], ["a", "b"])
    assert Y.tolist() == [[True, False], [True, True], [False, False]]
    with pytest.raises(ValueError, match="'z'"):
        mlmetrics.multi_hot([["z"]], ["a", "b"])
