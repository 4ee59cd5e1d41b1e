"""Training and evaluating multi-label heads on synthetic keyword data (fake embedder: seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from embedclf.embedders.fake import FakeEmbedder
from embedclf.heads.multilabel import decide
from embedclf.training import mlmetrics
from embedclf.training.mlevaluate import evaluate_multilabel
from embedclf.training.multilabel import MultiLabelParams, pos_weights, train_multilabel
from tests.helpers import ML_TOPICS, multilabel_texts

FAST = MultiLabelParams(epochs=15, hidden_dim=64, batch_size=64, patience=5, min_positives=5, sparse_member=False)


@pytest.fixture(scope="module")
def data():
    emb = FakeEmbedder(128)
    tr_texts, tr_sets = multilabel_texts(600, seed=1)
    te_texts, te_sets = multilabel_texts(200, seed=2)
    return emb, emb.embed(tr_texts), tr_sets, emb.embed(te_texts), te_sets, tr_texts, te_texts


def test_pos_weights_follow_the_imbalance():
    Y = np.zeros((100, 3), dtype=bool)
    Y[:50, 0] = True
    Y[:4, 1] = True
    w = pos_weights(Y, 0.5, 4.0)
    assert w[0] == pytest.approx(1.0) and w[1] == pytest.approx(4.0)  # sqrt(96/4) = 4.9, capped at 4
    assert w[2] == 1.0  # no positives
    assert (pos_weights(Y, 0.0, 50) == 1).all()


def test_trained_head_predicts_label_sets(data):
    _, X, sets, Xt, test_sets, _, _ = data
    r = train_multilabel(X, sets, FAST)
    assert r.labels == sorted(ML_TOPICS)
    head = r.head
    t = head.thresholds()
    assert t.shape == (5,) and ((t > 0) & (t < 1)).all()
    assert len(head.config.member_weights) == 2 and sum(head.config.member_weights) == pytest.approx(1)
    Y = mlmetrics.multi_hot(test_sets, r.labels)
    P = decide(head.predict_proba(Xt), t)
    assert mlmetrics.macro_f1(Y, P) > 0.85 and mlmetrics.micro_f1(Y, P) > 0.85
    # texts with two or three labels get several
    assert P.sum(1).mean() == pytest.approx(Y.sum(1).mean(), abs=0.25)
    assert 1 <= r.best_epoch <= len(r.history) <= FAST.epochs
    assert r.val_index is not None and len(r.val_index) == 60
    assert r.thresholds_info["min_positives"] == 5 and "weight_grid" in r.thresholds_info


def test_training_is_deterministic(data):
    _, X, sets, Xt, _, _, _ = data
    a = train_multilabel(X[:300], sets[:300], FAST)
    b = train_multilabel(X[:300], sets[:300], FAST)
    np.testing.assert_array_equal(a.head.predict_proba(Xt), b.head.predict_proba(Xt))
    assert a.head.config == b.head.config


def test_caller_validation_and_average_combination(data):
    _, X, sets, Xt, test_sets, _, _ = data
    r = train_multilabel(X, sets, MultiLabelParams(**{**FAST.to_dict(), "combine": "average"}), val=(Xt, test_sets))
    assert r.val_index is None and r.head.config.member_weights == (0.5, 0.5)
    with pytest.raises(ValueError, match="unknown"):
        train_multilabel(X, sets, FAST, val=(Xt[:1], [["nope"]]))
    with pytest.raises(ValueError, match="2 distinct labels"):
        train_multilabel(X[:10], [["a"]] * 10, FAST)


def test_evaluate_reports_head_and_baseline_on_the_same_split(data):
    emb, _, sets, _, test_sets, tr_texts, te_texts = data
    ev = evaluate_multilabel(emb, tr_texts, sets, te_texts, test_sets, FAST)
    s = ev.summary()
    for k in ("macro_f1", "micro_f1", "samples_jaccard", "baseline_tfidf_macro_f1", "n_train", "n_test", "embedder"):
        assert k in s
    assert s["n_train"] + s["n_val"] == 600 and s["n_val"] == 60 and s["n_test"] == 200
    assert s["embedder"] == "fake:128" and s["head_type"] == "multi_label"
    assert s["macro_f1"] > 0.85 and s["baseline_tfidf_macro_f1"] > 0.85  # keywords: both camps do well
    assert 0 < s["baseline_tfidf_threshold"] < 1
    assert [r["label"] for r in ev.report["per_label"]] == sorted(ML_TOPICS)
    assert all("threshold" in r for r in ev.report["per_label"])
    with pytest.raises(ValueError, match="never appear in training"):
        evaluate_multilabel(emb, tr_texts, sets, te_texts[:1], [["unheard"]], FAST)


def test_simplex_grid():
    from embedclf.training.multilabel import simplex_grid

    g3 = simplex_grid(3)
    assert len(g3) == 66 and len(set(g3)) == 66
    assert all(abs(sum(w) - 1) < 1e-9 and min(w) >= 0 for w in g3)
    assert simplex_grid(2)[0] == (1.0, 0.0) and len(simplex_grid(2)) == 11


def test_sparse_member_is_fitted_and_mixed(data):
    from dataclasses import replace

    _, X, sets, Xt, test_sets, tr_texts, te_texts = data
    with pytest.raises(ValueError, match="texts"):
        train_multilabel(X, sets, replace(FAST, sparse_member=True))
    r = train_multilabel(X, sets, replace(FAST, sparse_member=True, sparse_max_features=2000), texts=tr_texts)
    head = r.head
    assert head.config.member_names == ("mlp", "linear", "sparse") and len(head.config.member_weights) == 3
    assert r.members["sparse"]["n_features"] == head.config.sparse_features <= 4000
    with pytest.raises(ValueError, match="needs the texts"):
        head.predict_proba(Xt)
    Y = mlmetrics.multi_hot(test_sets, r.labels)
    P = head.predict(Xt, te_texts)
    assert mlmetrics.macro_f1(Y, P) > 0.85
    # the sparse member alone separates keyword data too
    sparse_only = head.member_proba(Xt, te_texts)[2]
    assert mlmetrics.macro_f1(Y, sparse_only >= 0.5) > 0.8


def test_bench_rule_variants_share_one_training_and_match_separate_ones(data):
    """sparse / sparse-top1 / sparse-max2 differ only in the decision rule: one training, same figures."""
    from embedclf.bench.mlheads import compare

    _, X, sets, _, _, texts, _ = data
    X, sets, texts = X[:300], sets[:300], texts[:300]
    base = MultiLabelParams(epochs=3, hidden_dim=16, sparse_max_features=300, min_positives=5)
    names = ["sparse", "sparse-top1", "sparse-max2"]
    shared = compare(X, sets, texts, names, folds=2, base=base)
    for name in names[1:]:
        alone = compare(X, sets, texts, [name], folds=2, base=base)
        assert alone["variants"][name]["fold_macro_f1"] == shared["variants"][name]["fold_macro_f1"]
    # a forced top label never lowers the number of labels per text
    assert shared["variants"]["sparse-top1"]["cardinality"] >= shared["variants"]["sparse"]["cardinality"]
    assert shared["variants"]["sparse-max2"]["cardinality"] <= shared["variants"]["sparse"]["cardinality"]
