"""SIGTERM while tasks wait in a worker's buffer: they go back to the queue, none is lost."""

from __future__ import annotations

import time

import pytest
import redis

from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.store import repository as repo
from tests.conftest import settings_env
from tests.worker.test_e2e import produce, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def tiny_head_and_empty_queue(settings, clean_db) -> redis.Redis:
    """An active head "tiny" for the fake:32 embedder, and an empty queue; returns a Redis client."""
    head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
    repo.add_head_version(clean_db, "tiny", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
    r = redis.Redis.from_url(settings.broker_url)
    r.delete(settings.queue)
    return r


def test_sigterm_returns_buffered_tasks_to_the_queue(settings, clean_db, start_worker, tmp_path):
    r = tiny_head_and_empty_queue(settings, clean_db)
    # a batch that would wait a minute: the tasks sit unacked in the worker's buffer
    slow = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32", EMBEDCLF_BATCH_MAX_WAIT_MS="60000",
                                     EMBEDCLF_BATCH_MAX_SIZE="100"), name="w-slow")
    slow.wait_ready()
    ids = [f"buffered-{i}" for i in range(5)]
    produce(settings.broker_url, [{"id": t, "kwargs": {"head": "tiny", "text": f"text {t}"}} for t in ids], tmp_path)
    deadline = time.monotonic() + 30
    while r.llen(settings.queue) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.llen(settings.queue) == 0  # the worker holds all five
    assert repo.query_predictions(clean_db, task_ids=ids) == []
    assert slow.stop(timeout=60) == 0  # warm shutdown exits cleanly
    assert r.llen(settings.queue) == 5  # back in the queue at once, not after the visibility timeout
    fresh = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32"), name="w-fresh")
    fresh.wait_ready()
    rows = wait_rows(clean_db, ids, fresh, timeout=60)
    assert sorted(rows) == sorted(ids) and all(row["status"] == "ok" for row in rows.values())


def test_sigterm_finishes_and_acks_the_batch_in_flight(settings, clean_db, start_worker, tmp_path):
    """A batch already handed to the runner thread commits its rows and is acked before exit."""
    r = tiny_head_and_empty_queue(settings, clean_db)
    # every embed call takes 4 s: long enough to send SIGTERM while the batch runs
    w = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32?delay_ms=4000", EMBEDCLF_BATCH_MAX_SIZE="5",
                                  EMBEDCLF_BATCH_MAX_WAIT_MS="50"), name="w-inflight")
    w.wait_ready()
    ids = [f"inflight-{i}" for i in range(5)]
    produce(settings.broker_url, [{"id": t, "kwargs": {"head": "tiny", "text": f"text {t}"}} for t in ids], tmp_path)
    # the runner counts an attempt right before it classifies: the batch is in flight
    deadline = time.monotonic() + 30
    while not all(r.exists(f"embedclf:attempts:{t}") for t in ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(r.exists(f"embedclf:attempts:{t}") for t in ids), "the batch never started"
    assert repo.query_predictions(clean_db, task_ids=ids) == []
    assert w.stop(timeout=60) == 0
    rows = {row["task_id"]: row for row in repo.query_predictions(clean_db, task_ids=ids)}
    assert sorted(rows) == sorted(ids) and all(row["status"] == "ok" for row in rows.values())
    # acked: nothing went back to the queue, nothing is left unacked, the attempt counts are cleared
    assert r.llen(settings.queue) == 0
    assert r.hlen("unacked") == 0
    assert not any(r.exists(f"embedclf:attempts:{t}") for t in ids)
