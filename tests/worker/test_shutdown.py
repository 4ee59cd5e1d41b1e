"""Warm shutdown of a real worker: the batch in flight is finished and acked, buffered tasks go straight back."""

from __future__ import annotations

import time

import pytest
import redis

from embedclf.store import repository as repo
from tests.conftest import settings_env
from tests.helpers import forget_workers, produce, tiny_head, wait_rows
from worker.inflight import DEATHS, PREFIX, REGISTRY

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def empty_queue(settings) -> redis.Redis:
    """The queue empty and no worker records (these tests assert their own worker leaves none behind)."""
    forget_workers(settings.broker_url)
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


def _proxied(settings, pg_url):
    from urllib.parse import urlsplit

    from sqlalchemy.engine import make_url

    from embedclf.config import Settings
    from tests.faultkit import TcpProxy

    pg = urlsplit(pg_url.replace("postgresql+psycopg2", "postgresql"))
    proxy = TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    url = make_url(pg_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    return proxy, Settings(database_url=url, broker_url=settings.broker_url, queue=settings.queue)


def _held(r) -> int:
    return sum(int(r.hlen(k)) for k in r.scan_iter(PREFIX + "w:*:inflight"))


def test_kill_or_stop_while_a_batch_waits_for_postgres_charges_no_attempt(settings, clean_db, pg_url, start_worker,
                                                                          tmp_path):
    """Waiting for the database is not processing: neither a kill -9 nor a SIGTERM then counts against the tasks."""
    import os
    import signal

    tiny_head(clean_db)
    r = empty_queue(settings)
    proxy, wsettings = _proxied(settings, pg_url)
    proxy.start()
    env = settings_env(wsettings, EMBEDCLF_EMBEDDER="fake:32", EMBEDCLF_HEARTBEAT_TTL_S="3")
    try:
        w1 = start_worker(env, name="w-wait-1")
        w1.wait_ready()
        proxy.cut()  # the database goes away
        ids = [f"held-{i}" for i in range(6)]
        produce(settings.broker_url, [{"id": t, "kwargs": {"head": "tiny", "text": f"text {t}"}} for t in ids],
                tmp_path)
        deadline = time.monotonic() + 30
        while (_held(r) < 6 or "database (write) unavailable" not in w1.log()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _held(r) == 6 and "database (write) unavailable" in w1.log()  # classified, waiting to write
        time.sleep(1)
        os.kill(w1.pid, signal.SIGKILL)  # dies while its batch waits for Postgres
        w1.proc.wait()
        w2 = start_worker(env, name="w-wait-2")  # its heartbeat thread reaps w1's messages
        w2.wait_ready()
        deadline = time.monotonic() + 30
        while "is gone (heartbeat expired)" not in w2.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "returned its 6 message(s) to the queue (0 charged" in w2.log(), w2.log()[-2000:]
        assert r.hlen(DEATHS) == 0
        # and a warm stop while waiting for Postgres hands them back at once, uncharged
        deadline = time.monotonic() + 30
        while _held(r) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert w2.stop(timeout=90) == 0
        assert r.llen(settings.queue) == 6 and _held(r) == 0 and r.hlen(DEATHS) == 0
        proxy.start()
        w3 = start_worker(env, name="w-wait-3")
        w3.wait_ready()
        rows = wait_rows(clean_db, ids, w3, timeout=60)
        assert sorted(rows) == sorted(ids) and all(row["status"] == "ok" for row in rows.values())
    finally:
        proxy.stop()
