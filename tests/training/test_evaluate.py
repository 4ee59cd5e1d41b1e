"""evaluate_head end to end with the FakeEmbedder (no real model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
