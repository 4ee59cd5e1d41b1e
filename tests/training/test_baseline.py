"""The TF-IDF baseline on a synthetic keyword task."""

from __future__ import annotations

import numpy as np
import pytest

from embedclf.training.baseline import tfidf_baseline
from embedclf.training.split import LabelEncoder

from .textdata import TOPICS, make_texts


@pytest.fixture(scope="module")
def data():
    tr_x, tr_y = make_texts(30, seed=1)
    te_x, te_y = make_texts(10, seed=2)
    enc = LabelEncoder.fit(tr_y)
    return tr_x, enc.encode(tr_y), te_x, enc.encode(te_y), len(enc.labels)


def test_baseline_beats_chance_clearly(data):
    rep = tfidf_baseline(*data)
    chance = 1 / len(TOPICS)
    assert rep["accuracy"] > 0.9 > 3 * chance
    assert rep["macro_f1"] > 0.9
    assert rep["top3_accuracy"] >= rep["accuracy"]
    assert rep["map3"] >= rep["accuracy"]


def test_baseline_returns_metric_keys(data):
    rep = tfidf_baseline(*data)
    assert set(rep) == {"accuracy", "macro_f1", "map3", "top3_accuracy", "log_loss", "seconds"}
    assert rep["seconds"] > 0
    assert all(np.isfinite(v) for v in rep.values())


def test_baseline_deterministic_by_seed(data):
    assert tfidf_baseline(*data, seed=3) | {"seconds": 0} == tfidf_baseline(*data, seed=3) | {"seconds": 0}


def test_baseline_handles_label_missing_from_training():
    # label index 2 exists (num_labels=3) but has no training texts: its column must stay 0
    tr_x = ["apple banana"] * 5 + ["car truck"] * 5
    tr_y = np.array([0] * 5 + [1] * 5)
    te_x = ["apple", "truck", "banana car"]
    te_y = np.array([0, 1, 2])
    rep = tfidf_baseline(tr_x, tr_y, te_x, te_y, num_labels=3)
    assert rep["accuracy"] == pytest.approx(2 / 3)
    assert rep["top3_accuracy"] == pytest.approx(1.0)  # label 2 ranked last of 3
