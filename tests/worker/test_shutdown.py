"""Warm shutdown of a real worker: the batch in flight is finished and acked, buffered tasks go straight back."""

from __future__ import annotations

import time

import pytest
import redis

from embedclf.store import repository as repo
from tests.conftest import settings_env
from tests.helpers import produce, tiny_head, wait_rows
from worker.inflight import DEATHS, PREFIX, REGISTRY

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def empty_queue(settings) -> redis.Redis:
    r = redis.Redis.from_url(settings.broker_url)
    r.delete(settings.queue, DEATHS)
    return r


def test_sigterm_returns_buffered_tasks_to_the_queue(settings, clean_db, start_worker, tmp_path):
    tiny_head(clean_db)
    r = empty_queue(settings)
    # a batch that would wait a minute: the tasks sit in the worker's buffer (its in-flight hash)
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
    t0 = time.monotonic()
    assert slow.stop(timeout=60) == 0  # warm shutdown exits cleanly
    assert time.monotonic() - t0 < 15
    assert r.llen(settings.queue) == 5  # back in the queue at once, not after a heartbeat expiry
    assert not r.hkeys(REGISTRY) and r.hlen(DEATHS) == 0  # unregistered, nothing charged
    fresh = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32"), name="w-fresh")
    fresh.wait_ready()
    rows = wait_rows(clean_db, ids, fresh, timeout=60)
    assert sorted(rows) == sorted(ids) and all(row["status"] == "ok" for row in rows.values())


def test_sigterm_finishes_and_acks_the_batch_in_flight(settings, clean_db, start_worker, tmp_path):
    """A batch already being embedded commits its rows and is acked before exit."""
    tiny_head(clean_db)
    r = empty_queue(settings)
    # every embed call takes 4 s: long enough to send SIGTERM while the batch runs
    w = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32?delay_ms=4000", EMBEDCLF_BATCH_MAX_SIZE="5",
                                  EMBEDCLF_BATCH_MAX_WAIT_MS="50"), name="w-inflight")
    w.wait_ready()
    ids = [f"inflight-{i}" for i in range(5)]
    produce(settings.broker_url, [{"id": t, "kwargs": {"head": "tiny", "text": f"text {t}"}} for t in ids], tmp_path)
    # the worker marks a batch busy right before it embeds it
    deadline = time.monotonic() + 30
    while not list(r.scan_iter(PREFIX + "w:*:busy")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(r.scan_iter(PREFIX + "w:*:busy")), "the batch never started"
    assert repo.query_predictions(clean_db, task_ids=ids) == []
    assert w.stop(timeout=60) == 0
    rows = {row["task_id"]: row for row in repo.query_predictions(clean_db, task_ids=ids)}
    assert sorted(rows) == sorted(ids) and all(row["status"] == "ok" for row in rows.values())
    # acked: nothing went back to the queue, nothing is held, nothing charged
    assert r.llen(settings.queue) == 0
    assert not list(r.scan_iter(PREFIX + "w:*")) and not r.hkeys(REGISTRY) and r.hlen(DEATHS) == 0
