"""Heads and predictions against a real Postgres database."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy.exc import IntegrityError

from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.store import repository as repo

pytestmark = pytest.mark.postgres


def artifact(seed: int = 0, labels=("a", "b", "c"), embedder_id: str = "fake:16") -> HeadArtifact:
    import torch

    torch.manual_seed(seed)
    head = MLPHead(HeadConfig(input_dim=16, num_labels=len(labels), hidden_dim=8))
    return HeadArtifact.from_head(head, list(labels), embedder_id, metrics={"accuracy": 0.5 + seed / 100})


def test_versions_increment_and_one_is_active(clean_db):
    assert repo.add_head_version(clean_db, "intents", artifact(1)) == 1
    assert repo.add_head_version(clean_db, "intents", artifact(2)) == 2
    assert repo.add_head_version(clean_db, "other", artifact(3)) == 1
    assert repo.active_versions(clean_db) == {"intents": 2, "other": 1}
    versions = repo.list_heads(clean_db, "intents")
    assert [(v.version, v.is_active) for v in versions] == [(1, False), (2, True)]
    assert versions[1].metrics["accuracy"] == pytest.approx(0.52)


def test_no_activate_keeps_previous(clean_db):
    repo.add_head_version(clean_db, "h", artifact(1))
    repo.add_head_version(clean_db, "h", artifact(2), activate=False)
    assert repo.active_versions(clean_db) == {"h": 1}


def test_loaded_head_reproduces_probabilities(clean_db):
    art = artifact(7)
    repo.add_head_version(clean_db, "h", art, data_fingerprint="abc", n_train=10)
    meta, loaded = repo.load_head(clean_db, "h")
    x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    np.testing.assert_array_equal(art.build().predict_proba(x), loaded.build().predict_proba(x))
    assert meta.version == 1 and meta.is_active and loaded.labels == ["a", "b", "c"]
    assert loaded.embedder_id == "fake:16" and meta.n_train == 10


def test_activate_and_rollback(clean_db):
    for seed in (1, 2, 3):
        repo.add_head_version(clean_db, "h", artifact(seed))
    repo.activate(clean_db, "h", 1)
    assert repo.active_versions(clean_db) == {"h": 1}
    assert repo.rollback(clean_db, "h") == 3  # back to what was active before 1
    assert repo.active_versions(clean_db) == {"h": 3}
    with pytest.raises(repo.HeadNotFound, match="no version 9"):
        repo.activate(clean_db, "h", 9)
    assert repo.active_versions(clean_db) == {"h": 3}  # failed activation changed nothing


def test_rollback_without_history_is_refused(clean_db):
    repo.add_head_version(clean_db, "solo", artifact(1))
    with pytest.raises(repo.HeadStateError, match="no earlier version"):
        repo.rollback(clean_db, "solo")
    with pytest.raises(repo.HeadNotFound):
        repo.rollback(clean_db, "missing")


def test_load_unknown_head(clean_db):
    with pytest.raises(repo.HeadNotFound, match=r"head 'nope' does not exist \(no heads yet"):
        repo.load_head(clean_db, "nope")


def test_a_head_that_does_not_exist_is_told_apart_from_a_missing_version(clean_db):
    repo.add_head_version(clean_db, "beta", artifact(1), activate=False)
    repo.add_head_version(clean_db, "alpha", artifact(2))
    for call in (lambda: repo.load_head(clean_db, "nope"), lambda: repo.load_head(clean_db, "nope", 1),
                 lambda: repo.activate(clean_db, "nope", 1), lambda: repo.rollback(clean_db, "nope"),
                 lambda: repo.delete_version(clean_db, "nope", 1)):
        with pytest.raises(repo.HeadNotFound) as info:
            call()
        assert str(info.value) == "head 'nope' does not exist (heads: alpha, beta)"
    # an existing head keeps the precise message
    with pytest.raises(repo.HeadNotFound, match="^head 'beta' has no active version$"):
        repo.load_head(clean_db, "beta")
    with pytest.raises(repo.HeadNotFound, match="^head 'alpha' has no version 7$"):
        repo.load_head(clean_db, "alpha", 7)
    assert repo.head_names(clean_db) == ["alpha", "beta"]


def test_many_head_names_are_not_all_listed():
    names = [f"h{i:02d}" for i in range(repo.LIST_NAMES_UP_TO + 1)]
    assert str(repo.missing_head("x",
                                 names)) == f"head 'x' does not exist ({len(names)} heads: see `embedclf heads list`)"
    assert "h09" in str(repo.missing_head("x", names[:-1]))


def _ok(task_id: str, **kw) -> dict:
    row = {"task_id": task_id, "status": "ok", "label": "a", "score": 0.9,
           "top3": [{"label": "a", "score": 0.9}, {"label": "b", "score": 0.05}, {"label": "c", "score": 0.05}],
           "head_name": "h", "head_version": 1, "embedder_id": "fake:16", "text": "héllo 👋",
           "enqueued_at": dt.datetime.now(dt.timezone.utc)}
    row.update(kw)
    return row


def test_write_predictions_is_idempotent(clean_db):
    assert repo.write_predictions(clean_db, [_ok("t1"), _ok("t2"), _ok("t1")]) == 2
    assert repo.write_predictions(clean_db, [_ok("t2", label="b"), _ok("t3")]) == 1
    rows = {r["task_id"]: r for r in repo.query_predictions(clean_db, limit=None)}
    assert set(rows) == {"t1", "t2", "t3"}
    assert rows["t2"]["label"] == "a"  # first write wins
    assert rows["t1"]["text"] == "héllo 👋" and rows["t1"]["top3"][0] == {"label": "a", "score": 0.9}
    assert repo.count_predictions(clean_db) == {"ok": 3}


def test_query_filters(clean_db):
    repo.write_predictions(clean_db, [
        _ok("a1", request_id="r1"), _ok("a2", head_name="other"),
        {"task_id": "e1", "status": "error", "error": "bad", "head_name": "h"},
    ])
    assert {r["task_id"] for r in repo.query_predictions(clean_db, head="h")} == {"a1", "e1"}
    assert [r["task_id"] for r in repo.query_predictions(clean_db, status="error")] == ["e1"]
    assert [r["task_id"] for r in repo.query_predictions(clean_db, request_id="r1")] == ["a1"]
    assert len(repo.query_predictions(clean_db, limit=2)) == 2


def test_database_rejects_inconsistent_rows(clean_db):
    with pytest.raises(IntegrityError):
        repo.write_predictions(clean_db, [{"task_id": "x", "status": "ok"}])  # ok without a label
    with pytest.raises(IntegrityError):
        repo.write_predictions(clean_db, [{"task_id": "y", "status": "error"}])  # error without message
    assert repo.count_predictions(clean_db) == {}


def test_delete_inactive_version_only(clean_db):
    repo.add_head_version(clean_db, "h", artifact(1))
    repo.add_head_version(clean_db, "h", artifact(2))
    with pytest.raises(repo.HeadStateError, match="is active"):
        repo.delete_version(clean_db, "h", 2)
    repo.delete_version(clean_db, "h", 1)
    assert [v.version for v in repo.list_heads(clean_db, "h")] == [2]
    with pytest.raises(repo.HeadNotFound):
        repo.delete_version(clean_db, "h", 1)
    # rollback skips versions that no longer exist
    with pytest.raises(repo.HeadStateError, match="no earlier version"):
        repo.rollback(clean_db, "h")
