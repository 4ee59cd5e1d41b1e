"""The shared head use cases: train on a split and store a version; a quick stored head for benchmarks."""

from __future__ import annotations

import numpy as np
import pytest

from embedclf import headops
from embedclf.embedders.fake import FakeEmbedder
from embedclf.store import repository as repo
from embedclf.training.trainer import TrainParams

pytestmark = pytest.mark.postgres

TOPICS = {"billing": "invoice refund charge payment card", "shipping": "parcel delivery courier tracking late",
          "login": "password account locked reset sign"}


def _data(n_per: int = 30) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for label, words in TOPICS.items():
        vocab = words.split()
        for _ in range(n_per):
            texts.append(" ".join(rng.choice(vocab, size=5)) + f" {rng.integers(1000)}")
            labels.append(label)
    return texts, labels


def test_train_version_holds_out_a_split_reports_and_stores_the_version(clean_db):
    texts, labels = _data()
    params = TrainParams(epochs=5, seed=0, tfidf_member=True)
    first = headops.train_version(clean_db, FakeEmbedder(32), "topics", texts, labels, params, test_size=0.2,
                                  extra_summary={"dataset": None})
    keep, held = headops.split(labels, 0.2, 0)
    assert sorted(keep + held) == list(range(len(texts))) and len(held) == first.summary["n_test"] == 18
    assert first.version == 1 and first.summary["version"] == 1 and first.summary["active"] is True
    meta, art = repo.load_head(clean_db, "topics")
    assert meta.version == 1 and meta.n_train == len(keep)
    assert meta.metrics["report"] == first.evaluation.report and "dataset" in meta.metrics
    assert art.config.tfidf is not None  # the hybrid member went into the stored head
    stored = art.build()
    np.testing.assert_allclose(stored.predict_proba(FakeEmbedder(32).embed(texts[:5]), texts[:5]),
                               first.evaluation.result.head.predict_proba(FakeEmbedder(32).embed(texts[:5]), texts[:5]),
                               atol=1e-6)
    second = headops.train_version(clean_db, FakeEmbedder(32), "topics", texts, labels, params, test_size=0.2,
                                   activate=False)
    assert second.version == 2 and repo.load_head(clean_db, "topics")[0].version == 1  # v1 stays active


def test_quick_version_stores_an_active_head_for_benchmarks(clean_db):
    texts, labels = _data(10)
    X = FakeEmbedder(16).embed(texts)
    assert headops.quick_version(clean_db, "bench", X, labels, "fake:16", epochs=2, created_by="test") == 1
    meta, art = repo.load_head(clean_db, "bench")
    assert meta.embedder_id == "fake:16" and sorted(art.labels) == sorted(TOPICS)
    assert art.config.tfidf is None  # no texts: no TF-IDF member
    trained: list = []
    assert headops.quick_version(clean_db, "bench", X, labels, "fake:16", epochs=2, created_by="test",
                                 texts=texts, trained=trained) == 2
    _, art = repo.load_head(clean_db, "bench")
    assert art.config.tfidf is not None and trained[0].config.tfidf == art.config.tfidf  # the default head's member
