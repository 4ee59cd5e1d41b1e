"""Abstention thresholds chosen on validation data (pure, synthetic probabilities)."""

from __future__ import annotations

import numpy as np
import pytest

from embedclf.training.abstain import abstain_mask, choose_threshold, labels_oos_index, scope_metrics


def rows(confs: list[float], n: int = 3, pick: list[int] | None = None) -> np.ndarray:
    """Probability rows whose top class (``pick``, default 0) has the given confidence."""
    out = np.zeros((len(confs), n))
    for i, c in enumerate(confs):
        j = pick[i] if pick else 0
        out[i] = (1 - c) / (n - 1)
        out[i, j] = c
    return out


def test_abstain_mask_threshold_and_oos_label():
    p = rows([0.9, 0.4, 0.8], pick=[0, 1, 2])
    assert abstain_mask(p, None).tolist() == [False, False, False]
    assert abstain_mask(p, 0.5).tolist() == [False, True, False]
    assert abstain_mask(p, 0.5, oos_index=2).tolist() == [False, True, True]
    assert abstain_mask(p, 0.0).tolist() == [False, False, False]


def test_target_precision_picks_lowest_threshold_reaching_it():
    # confident answers right, unconfident ones wrong: 0.6 and below must go
    conf = [0.99, 0.95, 0.9, 0.85, 0.8, 0.6, 0.5, 0.4]
    right = [1, 1, 1, 1, 1, 0, 0, 0]
    p = rows(conf)
    y = np.array([0 if r else 1 for r in right])
    rule = choose_threshold(p, y, target_precision=0.95)
    assert rule.threshold == pytest.approx(0.8)
    assert rule.val["answered_precision"] == 1.0
    assert rule.val["in_scope_answered"] == pytest.approx(5 / 8)
    assert "precision >= 0.95" in rule.criterion
    # a looser target keeps more answers: 5 right of 6 answered = 0.83
    assert choose_threshold(p, y, target_precision=0.8).threshold == pytest.approx(0.6)


def test_target_precision_already_met_never_abstains():
    p = rows([0.9, 0.5, 0.4])
    rule = choose_threshold(p, np.zeros(3, dtype=int), target_precision=0.95)
    assert rule.threshold == 0.0
    assert rule.val["in_scope_answered"] == 1.0


def test_oos_examples_balance_accuracy_and_recall():
    rng = np.random.default_rng(0)
    in_conf = rng.uniform(0.6, 1.0, 300)
    oos_conf = rng.uniform(0.2, 0.7, 100)
    in_p, oos_p = rows(list(in_conf), n=5), rows(list(oos_conf), n=5)
    y = np.zeros(300, dtype=int)
    rule = choose_threshold(in_p, y, oos_p, max_accuracy_loss=None)
    # brute force the same criterion over a fine grid: the chosen rule is at least as good
    def crit(t):
        m = scope_metrics(in_p, y, oos_p, t)
        return m["in_scope_accuracy"] + m["oos_recall"]
    best_grid = max(crit(t) for t in np.linspace(0, 1, 2001))
    assert crit(rule.threshold) >= best_grid - 1e-9
    # analytically (uniform densities 2.5 in-scope vs 2 OOS per unit) the optimum sits at the
    # bottom of the in-scope range: keep every in-scope answer, catch ~80 % of OOS texts
    assert 0.6 <= rule.threshold <= 0.65
    assert rule.val["in_scope_accuracy"] > 0.95 and 0.7 < rule.val["oos_recall"] < 0.9
    assert "OOS recall" in rule.criterion


def test_oos_label_counts_as_abstention():
    # class 2 is "oos": an OOS text predicted as class 2 is caught at any threshold
    oos_p = rows([0.9, 0.9, 0.3], pick=[2, 2, 0])
    in_p = rows([0.9, 0.8], pick=[0, 1])
    m = scope_metrics(in_p, np.array([0, 1]), oos_p, None, oos_index=2)
    assert m["oos_recall"] == pytest.approx(2 / 3) and m["in_scope_accuracy"] == 1.0
    rule = choose_threshold(in_p, np.array([0, 1]), oos_p, oos_index=2)
    assert rule.val["oos_recall"] == 1.0 and rule.val["in_scope_accuracy"] == 1.0
    assert 0.3 < rule.threshold <= 0.8


def test_scope_metrics_abstention_counts_as_wrong():
    p = rows([0.9, 0.4, 0.8, 0.7], pick=[0, 0, 1, 0])
    y = np.array([0, 0, 0, 0])
    m = scope_metrics(p, y, None, 0.5)
    assert m["in_scope_accuracy"] == pytest.approx(2 / 4)  # one abstained, one wrong
    assert m["in_scope_answered"] == pytest.approx(3 / 4)
    assert m["answered_precision"] == pytest.approx(2 / 3)
    assert "oos_recall" not in m


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="in-scope"):
        choose_threshold(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="precision"):
        choose_threshold(rows([0.9]), np.zeros(1, dtype=int), target_precision=0)


def test_labels_oos_index():
    assert labels_oos_index(["a", "oos", "b"], "oos") == 1
    assert labels_oos_index(["a", "b"], "oos") is None
    assert labels_oos_index(["a", "b"], None) is None


def test_oos_examples_with_an_accuracy_budget():
    rng = np.random.default_rng(0)
    in_conf = rng.uniform(0.6, 1.0, 1000)
    oos_conf = rng.uniform(0.2, 0.9, 200)
    in_p, oos_p = rows(list(in_conf), n=5), rows(list(oos_conf), n=5)
    y = np.zeros(1000, dtype=int)
    y[:50] = 1  # 5 % wrong answers spread over all confidences
    base = scope_metrics(in_p, y, oos_p, None)["in_scope_accuracy"]
    for budget in (0.0, 0.01, 0.05):
        rule = choose_threshold(in_p, y, oos_p, max_accuracy_loss=budget)
        assert rule.val["in_scope_accuracy"] >= base - budget - 1e-9
        # no threshold within the budget catches more OOS texts
        better = [t for t in np.linspace(0, 1, 1001)
                  if scope_metrics(in_p, y, oos_p, t)["in_scope_accuracy"] >= base - budget - 1e-9
                  and scope_metrics(in_p, y, oos_p, t)["oos_recall"] > rule.val["oos_recall"] + 1e-9]
        assert better == []
        assert "<= " + f"{budget:g}" in rule.criterion
    # a bigger budget never catches fewer OOS texts
    recalls = [choose_threshold(in_p, y, oos_p, max_accuracy_loss=b).val["oos_recall"] for b in (0.0, 0.01, 0.05)]
    assert recalls == sorted(recalls) and recalls[-1] > recalls[0]


# ---- an OOS score's discount on the top probability (heads/oos.py) ----

def test_discount_none_is_the_top_probability_rule():
    rng = np.random.default_rng(1)
    in_p, oos_p = rows(list(rng.uniform(0.5, 1, 200)), n=4), rows(list(rng.uniform(0.3, 0.95, 50)), n=4)
    y = (rng.uniform(size=200) < 0.05).astype(int)
    a = choose_threshold(in_p, y, oos_p)
    b = choose_threshold(in_p, y, oos_p, in_discount=np.ones(200), oos_discount=np.ones(50))
    assert a == b


def test_discount_catches_confident_oos_texts_far_from_training():
    # OOS texts as confident as in-scope ones: the top probability cannot separate them within the
    # budget; their discount (far from every training text) can
    rng = np.random.default_rng(2)
    in_p = rows(list(rng.uniform(0.6, 1.0, 500)), n=5)
    oos_p = rows(list(rng.uniform(0.6, 1.0, 100)), n=5)
    y = np.zeros(500, dtype=int)
    y[:25] = 1  # 5 % wrong
    in_d, oos_d = rng.uniform(0.7, 1.0, 500), rng.uniform(0.2, 0.4, 100)  # p*d: >= 0.42 vs <= 0.4
    plain = choose_threshold(in_p, y, oos_p)
    disc = choose_threshold(in_p, y, oos_p, in_discount=in_d, oos_discount=oos_d)
    base = scope_metrics(in_p, y, oos_p, None)["in_scope_accuracy"]
    assert disc.val["in_scope_accuracy"] >= base - 0.005 - 1e-9
    assert plain.val["oos_recall"] < 0.1 and disc.val["oos_recall"] == 1.0
    # the rule's figures are those the stored head gets: threshold on p_max * discount
    m = scope_metrics(in_p, y, oos_p, disc.threshold, in_discount=in_d, oos_discount=oos_d)
    assert m == disc.val
    conf = oos_p.max(1) * oos_d
    assert m["oos_recall"] == pytest.approx(np.mean(conf < disc.threshold))
    # within the budget, no threshold on the discounted confidence catches more
    ok_t = [t for t in np.linspace(0, 1, 1001)
            if scope_metrics(in_p, y, oos_p, t, in_discount=in_d, oos_discount=oos_d)["in_scope_accuracy"]
            >= base - 0.005 - 1e-9]
    assert max(scope_metrics(in_p, y, oos_p, t, in_discount=in_d, oos_discount=oos_d)["oos_recall"]
               for t in ok_t) <= disc.val["oos_recall"] + 1e-9
