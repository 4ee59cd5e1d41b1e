"""A multi-label head served by a real worker: rows (labels JSONB, label, score, abstained) match offline
predictions of all three members (MLP, linear, TF-IDF sparse)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from embedclf.embedders.fake import FakeEmbedder
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.multilabel import label_rows
from embedclf.results import entries
from embedclf.store import repository as repo
from embedclf.training.multilabel import MultiLabelParams, train_multilabel
from tests.conftest import settings_env
from tests.helpers import multilabel_texts, produce, rows_by_key, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def test_worker_writes_multi_label_rows(settings, clean_db, start_worker, tmp_path):
    emb = FakeEmbedder(64)
    texts, sets = multilabel_texts(500, seed=1)
    # min_labels=0: this head may abstain (the default, 1, always gives the top label), so rows of both kinds flow
    params = MultiLabelParams(epochs=12, hidden_dim=64, min_positives=5, sparse_member=True, sparse_max_features=2000,
                              min_labels=0)
    result = train_multilabel(emb.embed(texts), sets, params, texts=texts)
    head = result.head
    repo.add_head_version(clean_db, "tags", HeadArtifact.from_head(head, result.labels, emb.model_id))

    new_texts, _ = multilabel_texts(40, seed=7)
    new_texts += ["hello thanks again", "the a my", "it is today"]  # no topic word: expected to abstain
    proba = head.predict_proba(emb.embed(new_texts), new_texts)  # all three members, the TF-IDF one too
    expected = label_rows(proba, result.labels, head.thresholds())
    assert any(e["abstained"] for e in expected) and sum(len(e["labels"]) > 1 for e in expected) >= 5

    worker = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:64"), name="w-multilabel")
    worker.wait_ready()
    ids = [f"ml-{i}-{uuid.uuid4().hex[:6]}" for i in range(len(new_texts))]
    multi_id = f"ml-multi-{uuid.uuid4().hex[:6]}"
    tasks = [{"id": t, "kwargs": {"head": "tags", "text": x}} for t, x in zip(ids, new_texts)]
    tasks.append({"id": multi_id, "kwargs": {"head": "tags", "texts": new_texts[:3]}})
    produce(settings.broker_url, tasks, tmp_path)
    rows = wait_rows(clean_db, ids, worker, timeout=240)

    for tid, exp in zip(ids, expected):
        row = rows[tid]
        assert row["status"] == "ok" and row["error"] is None and row["head_version"] == 1, row["error"]
        assert row["abstained"] is exp["abstained"]
        assert row["label"] == exp["label"]
        assert row["score"] == pytest.approx(exp["score"], abs=1e-4)
        assert [x["label"] for x in row["labels"]] == [x["label"] for x in exp["labels"]]
        np.testing.assert_allclose([x["score"] for x in row["labels"]], [x["score"] for x in exp["labels"]],
                                   atol=1e-4)
        assert [x["label"] for x in row["top3"]] == [x["label"] for x in exp["top3"]]
        if exp["labels"]:  # label/score hold the best label over its threshold
            assert row["label"] == row["labels"][0]["label"]
        else:
            assert row["label"] is None and row["labels"] == []
        # what a producer sees passes the labels through
        assert entries([row])[0]["labels"] == row["labels"]

    wait_rows(clean_db, [multi_id], worker, n=3)
    multi = rows_by_key(clean_db, [multi_id])
    for item in range(3):
        row = multi[(multi_id, item, "tags")]
        assert row["labels"] == rows[ids[item]]["labels"] and row["abstained"] is rows[ids[item]]["abstained"]
