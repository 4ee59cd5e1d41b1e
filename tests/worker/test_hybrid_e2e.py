"""A hybrid head (dense members + TF-IDF member + kNN member) stored in Postgres and served by a real worker.

The rows must equal the offline predictions of the same head computed from (embedding, text), and
an OOS label trained into the head must turn into abstentions. Fake embedder (the sparse member
does not depend on the embedder); real Redis, Postgres and ``celery -A worker.app worker``.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from embedclf.embedders.fake import FakeEmbedder
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.store import repository as repo
from embedclf.training.trainer import TrainParams, train_head
from tests.conftest import settings_env
from tests.helpers import produce, wait_rows
from tests.training.textdata import make_texts

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def test_worker_serves_a_hybrid_head_like_offline(settings, clean_db, start_worker, tmp_path):
    texts, labels = make_texts(30, seed=21)
    labels = ["oos" if y == "feature" else y for y in labels]  # one class plays out-of-scope
    emb = FakeEmbedder(32)
    res = train_head(emb.embed_batch(texts), labels,
                     TrainParams(hidden_dim=16, num_layers=2, epochs=5, tfidf_member=True, member_weights="fit",
                                 tfidf_epochs=5, refit=True, knn_member="on", knn_k=3),
                     texts=texts)  # refit: as heads train's default
    head = res.head
    assert head.member_names == ["mlp", "linear", "tfidf", "knn"] and head.config.knn["n_vectors"] == len(texts)
    head.config = dataclasses.replace(head.config, oos_label="oos", abstain_threshold=0.4)
    repo.add_head_version(clean_db, "hybrid", HeadArtifact.from_head(head, res.labels, emb.model_id))

    # what the stored head predicts offline, loaded back from the database like a worker loads it
    _, artifact = repo.load_head(clean_db, "hybrid")
    stored = artifact.build()
    new_texts, _ = make_texts(8, seed=22)
    new_texts += ["nothing it has ever seen", "REFUND the INVOICE please!!"]
    proba = stored.predict_proba(emb.embed_batch(new_texts), new_texts)
    assert (proba == head.predict_proba(emb.embed_batch(new_texts), new_texts)).all()

    worker = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32", EMBEDCLF_BATCH_MAX_WAIT_MS="50"),
                          name="w-hybrid")
    worker.wait_ready()
    ids = [f"hyb-{i}-{uuid.uuid4().hex[:6]}" for i in range(len(new_texts))]
    produce(settings.broker_url, [{"id": t, "kwargs": {"head": "hybrid", "text": x}}
                                  for t, x in zip(ids, new_texts)], tmp_path)
    rows = wait_rows(clean_db, ids, worker, timeout=180)
    abstained = 0
    for tid, p in zip(ids, proba):
        row = rows[tid]
        assert row["status"] == "ok" and row["error"] is None, row["error"]
        best = res.labels[int(p.argmax())]
        assert row["top3"][0]["label"] == best
        assert row["score"] == pytest.approx(float(p.max()), abs=1e-5)
        expect_abstain = best == "oos" or float(p.max()) < 0.4
        assert row["abstained"] is expect_abstain
        assert row["label"] == (None if expect_abstain else best)
        abstained += expect_abstain
    assert 0 < abstained < len(new_texts)
