"""A head that abstains, served by a real worker: abstained rows keep their top-3, have no label."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest

from embedclf.data import load_labeled
from embedclf.demo import HOLDOUT_CSV, TRAIN_CSV
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.store import repository as repo
from embedclf.training.trainer import TrainParams, train_head
from tests.conftest import settings_env
from tests.helpers import produce, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def serve(head, labels, name, texts, settings, engine, embedder, start_worker, tmp_path):
    """Store ``head`` as the active head ``name``, start a real worker, send each text as a task.

    Returns the task ids (in text order) and the rows the worker wrote, by task id.
    """
    repo.add_head_version(engine, name, HeadArtifact.from_head(head, labels, embedder.model_id))
    worker = start_worker(settings_env(settings), name=f"w-abstain-{name}")
    worker.wait_ready()
    ids = [f"{name}-{i}-{uuid.uuid4().hex[:6]}" for i in range(len(texts))]
    produce(settings.broker_url, [{"id": t, "kwargs": {"head": name, "text": x}} for t, x in zip(ids, texts)],
            tmp_path)
    return ids, wait_rows(engine, ids, worker, timeout=240)


def test_worker_writes_abstained_rows(settings, clean_db, minilm, start_worker, tmp_path):
    train, holdout = load_labeled(TRAIN_CSV), load_labeled(HOLDOUT_CSV)
    result = train_head(minilm.embed(train.texts), train.labels, TrainParams(epochs=20))
    head = result.head
    proba = head.predict_proba(minilm.embed(holdout.texts))
    # a threshold between the holdout's top scores: some texts are answered, some abstained
    threshold = float(np.median(proba.max(1)))
    head.config = dataclasses.replace(head.config, abstain_threshold=threshold)
    ids, rows = serve(head, result.labels, "careful", holdout.texts, settings, clean_db, minilm, start_worker, tmp_path)
    abstained = answered = 0
    for tid, p in zip(ids, proba):
        row = rows[tid]
        assert row["status"] == "ok" and row["error"] is None
        scores = [x["score"] for x in row["top3"]]
        assert [x["label"] for x in row["top3"]][0] == result.labels[int(p.argmax())]  # top-3 kept either way
        assert row["score"] == pytest.approx(float(p.max()), abs=1e-4)
        if float(p.max()) < threshold - 1e-4:
            assert row["abstained"] is True and row["label"] is None, row
            abstained += 1
        elif float(p.max()) > threshold + 1e-4:
            assert row["abstained"] is False and row["label"] == result.labels[int(p.argmax())], row
            answered += 1
        assert scores == sorted(scores, reverse=True)
    assert abstained >= 30 and answered >= 30  # the median splits the 90 holdout texts


def test_worker_applies_a_stored_oos_score(settings, clean_db, minilm, start_worker, tmp_path):
    """A head with the kNN out-of-scope score (heads/oos.py): the worker abstains on the discounted confidence."""
    train, holdout = load_labeled(TRAIN_CSV), load_labeled(HOLDOUT_CSV)
    x_train = minilm.embed(train.texts)
    result = train_head(x_train, train.labels, TrainParams(epochs=20))
    head = result.head
    head.set_oos_score(x_train, k=10, beta=3.0)
    x = minilm.embed(holdout.texts)
    proba = head.predict_proba(x)
    conf = proba.max(1) * head.oos_discount(x)
    threshold = float(np.median(conf))
    head.config = dataclasses.replace(head.config, abstain_threshold=threshold)
    ids, rows = serve(head, result.labels, "knn", holdout.texts, settings, clean_db, minilm, start_worker, tmp_path)
    checked = differs = 0
    for tid, p, c in zip(ids, proba, conf):
        row = rows[tid]
        assert row["status"] == "ok" and row["score"] == pytest.approx(float(p.max()), abs=1e-4)
        if abs(c - threshold) > 1e-4:  # away from the edge (the worker's float32 kernels may differ slightly)
            assert row["abstained"] is bool(c < threshold), (row, c, threshold)
            assert (row["label"] is None) == row["abstained"]
            checked += 1
            differs += bool(c < threshold) != bool(p.max() < threshold)
    assert checked >= 80 and differs > 0  # the discount, not the top probability, decided some rows
