"""evaluate_head end to end with the FakeEmbedder (no real model)."""

from __future__ import annotations

import numpy as np
import pytest

from embedclf.embedders.fake import FakeEmbedder
from embedclf.training.evaluate import confusion_matrix, evaluate_head
from embedclf.training.trainer import TrainParams

from .textdata import TOPICS, make_texts

PARAMS = TrainParams(hidden_dim=64, num_layers=2, dropout=0.1, epochs=10, batch_size=32, lr=5e-3, patience=100)
SUMMARY_KEYS = {
    "accuracy",
    "macro_f1",
    "map3",
    "top3_accuracy",
    "baseline_tfidf_accuracy",
    "n_train",
    "n_test",
    "embedder",
    "embed_seconds",
    "train_seconds",
}




@pytest.fixture(scope="module")
def split():
    tr_x, tr_y = make_texts(32, seed=10)
    te_x, te_y = make_texts(8, seed=20)
    return tr_x, tr_y, te_x, te_y


@pytest.fixture(scope="module")
def evaluation(split):
    return evaluate_head(FakeEmbedder(128), *split, params=PARAMS)


def test_head_learns_the_task(evaluation):
    assert evaluation.metrics["accuracy"] > 0.8
    assert evaluation.metrics["top3_accuracy"] >= evaluation.metrics["accuracy"]
    assert evaluation.baseline["accuracy"] > 0.8


def test_summary_keys_and_values(evaluation, split):
    s = evaluation.summary()
    assert SUMMARY_KEYS <= set(s)
    assert s["n_train"] == len(split[0]) and s["n_test"] == len(split[2])
    assert s["n_labels"] == len(TOPICS)
    assert s["embedder"] == "fake:128"
    assert s["accuracy"] == pytest.approx(evaluation.metrics["accuracy"], abs=1e-4)
    assert s["baseline_tfidf_accuracy"] == pytest.approx(evaluation.baseline["accuracy"], abs=1e-4)
    assert s["embed_seconds"] >= 0 and s["train_seconds"] >= 0
    assert 1 <= s["best_epoch"] <= PARAMS.epochs
    for k in ("accuracy", "macro_f1", "map3", "top3_accuracy", "baseline_tfidf_accuracy"):
        assert 0.0 <= s[k] <= 1.0


def test_confusion_matrix_consistent_with_accuracy(evaluation, split):
    cm = evaluation.confusion
    n = len(TOPICS)
    assert cm.shape == (n, n)
    assert cm.sum() == len(split[2])
    # rows are true labels: each test label occurs 8 times
    assert list(cm.sum(axis=1)) == [8] * n
    assert np.trace(cm) / cm.sum() == pytest.approx(evaluation.metrics["accuracy"])


def test_unseen_test_labels_raise(split):
    tr_x, tr_y, te_x, te_y = split
    te_y = list(te_y)
    te_y[0] = "never-trained"
    with pytest.raises(ValueError, match="never-trained"):
        evaluate_head(FakeEmbedder(16), tr_x, tr_y, te_x, te_y, params=PARAMS)


def test_unseen_label_check_happens_before_embedding(split):
    tr_x, tr_y, te_x, _ = split
    emb = FakeEmbedder(16)
    with pytest.raises(ValueError):
        evaluate_head(emb, tr_x, tr_y, te_x, ["nope"] * len(te_x), params=PARAMS)
    assert emb.calls == []


def test_embed_progress_counts_every_text(split):
    tr_x, tr_y, te_x, te_y = split
    totals, done = [], []

    def progress(total):
        totals.append(total)
        return done.append

    params = TrainParams(epochs=1, hidden_dim=8)
    evaluate_head(FakeEmbedder(16), tr_x, tr_y, te_x, te_y, params=params, embed_progress=progress)
    assert totals == [len(tr_x) + len(te_x)]
    assert sum(done) == len(tr_x) + len(te_x)


def test_confusion_matrix_function():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])


# ---- the stored report and abstention ----

from embedclf.training.evaluate import Abstention  # noqa: E402


def test_report_is_stored_with_calibration_and_per_class(evaluation):
    rep = evaluation.report
    assert [r["label"] for r in rep["per_class"]] == evaluation.result.labels
    assert rep["history"] == evaluation.result.history
    cal = rep["calibration"]
    assert 0.0 <= cal["ece"] <= 1.0 and 0.0 <= cal["ece_uncalibrated"] <= 1.0
    assert cal["temperature"] == pytest.approx(evaluation.result.temperature)
    s = evaluation.summary()
    assert s["ece"] == pytest.approx(cal["ece"], abs=1e-4)
    assert "abstain_threshold" not in s and evaluation.result.head.config.abstain_threshold is None


def test_abstention_with_target_precision(split):
    ev = evaluate_head(FakeEmbedder(128), *split, params=PARAMS, abstention=Abstention(target_precision=0.99))
    rule = ev.abstain
    assert rule is not None and ev.result.head.config.abstain_threshold == rule.threshold
    assert rule.val["answered_precision"] >= 0.99  # chosen on validation: holds there
    s = ev.summary()
    for k in ("abstain_threshold", "in_scope_accuracy", "in_scope_answered", "answered_precision"):
        assert k in s
    # abstaining counts as wrong, so in-scope accuracy can only be <= plain accuracy
    assert s["in_scope_accuracy"] <= s["accuracy"] + 1e-9
    assert ev.report["abstain"]["test"]["n_in_scope"] == len(split[2])


def test_abstention_with_out_of_scope_texts(split):
    tr_x, tr_y, te_x, te_y = split
    va_x, va_y = make_texts(4, seed=30)
    # out of scope: only filler words, none of the topic keywords
    oos = [" ".join(w) for w in (("hello", "thanks", "again", "we"), ("please", "help", "today", "it"),
                                 ("the", "a", "my", "is"), ("and", "about", "this", "i"))] * 3
    ab = Abstention(oos_val=oos[:6], oos_test=oos[6:])
    ev = evaluate_head(FakeEmbedder(128), tr_x, tr_y, te_x, te_y, params=PARAMS, val=(va_x, va_y), abstention=ab)
    assert ev.result.val_y.shape == (len(va_x),)  # the caller's validation set, not a slice of train
    assert "OOS recall" in ev.abstain.criterion
    s = ev.summary()
    assert 0.0 <= s["oos_recall"] <= 1.0 and s["n_oos"] == 6
    assert ev.result.head.config.oos_label is None


def test_oos_label_is_trained_and_reported(split):
    tr_x, tr_y, te_x, te_y = split
    va_x, va_y = make_texts(4, seed=30)
    oos = ["hello thanks again we", "please help today it", "the a my is", "and about this i"] * 3
    ab = Abstention(oos_train=oos, oos_val=oos[:4], oos_test=oos[4:], oos_label="oos")
    ev = evaluate_head(FakeEmbedder(128), tr_x, tr_y, te_x, te_y, params=PARAMS, val=(va_x, va_y), abstention=ab)
    assert "oos" in ev.result.labels and ev.result.head.config.oos_label == "oos"
    assert ev.n_train == len(tr_x) + len(oos)
    # the same filler texts were trained as "oos": the head must catch them on test
    assert ev.scope["oos_recall"] == 1.0
    with pytest.raises(ValueError, match="already an in-scope label"):
        evaluate_head(FakeEmbedder(16), tr_x, tr_y, te_x, te_y, params=PARAMS,
                      abstention=Abstention(oos_train=oos, oos_label=tr_y[0]))


def test_oos_score_is_chosen_stored_and_applied_like_the_worker(split, tmp_path):
    from embedclf.heads.abstain import head_abstain
    from embedclf.heads.checkpoint import HeadArtifact

    tr_x, tr_y, te_x, te_y = split
    va_x, va_y = make_texts(4, seed=30)
    oos = ["hello thanks again we", "please help today it", "the a my is", "and about this i",
           "we it is about", "thanks my a this"] * 2
    ab = Abstention(oos_train=oos[:4], oos_val=oos[4:8], oos_test=oos[8:], oos_label="oos")
    emb = FakeEmbedder(128)
    ev = evaluate_head(emb, tr_x, tr_y, te_x, te_y, params=PARAMS, val=(va_x, va_y), abstention=ab)
    head = ev.result.head
    # the default score: kNN over the in-scope training texts (not the OOS class's)
    assert head.config.oos_score == {"kind": "knn-cosine", "k": 10, "beta": 3.0, "n_vectors": len(tr_x)}
    assert ev.summary()["abstain_oos_score"] == "knn-cosine k 10 beta 3"
    assert ev.report["abstain"]["oos_score"] == head.config.oos_score
    # the stored head, loaded back, abstains on test texts exactly as the reported figures say
    art = HeadArtifact.from_head(head, ev.result.labels, emb.model_id)
    art.save_dir(tmp_path / "h")
    loaded = HeadArtifact.load_dir(tmp_path / "h").build()
    for texts, key in ((te_x, "in_scope_answered"), (oos[8:], "oos_recall")):
        x = emb.embed(texts)
        mask = head_abstain(loaded, ev.result.labels, x, loaded.predict_proba(x, texts))
        share = 1 - mask.mean() if key == "in_scope_answered" else mask.mean()
        assert share == pytest.approx(ev.scope[key])
    # beta 0: the previous rule (top probability), no score stored
    ev0 = evaluate_head(emb, tr_x, tr_y, te_x, te_y, params=PARAMS, val=(va_x, va_y),
                        abstention=Abstention(oos_train=oos[:4], oos_val=oos[4:8], oos_test=oos[8:],
                                              oos_label="oos", oos_beta=0.0))
    assert ev0.result.head.config.oos_score is None and ev0.summary()["abstain_oos_score"] == "top probability"
    assert "oos.vectors" not in ev0.result.head.state_dict()
