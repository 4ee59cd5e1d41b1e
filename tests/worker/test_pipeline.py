"""The worker's pipeline in-process (receive, batch, write threads) on real Redis and Postgres, fake embedder.

Each test builds a :class:`worker.service.Service` directly (no Celery), fills the queue with the
client or raw entries, and checks the rows, the in-flight records and the death counts.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import sys
import time

import pytest
import redis
from sqlalchemy import text

from embedclf.client import Client
from embedclf.config import BatchSettings, Settings
from embedclf.embedders.fake import FakeEmbedder
from embedclf.store import repository as repo
from tests.faultkit import TcpProxy
from tests.helpers import rows_by_key, tiny_head
from worker.inflight import DEATHS, REGISTRY
from worker.resources import WorkerResources
from worker.service import Service

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


class Recorder:
    """Records each committed job's messages (the after-commit hook)."""

    def __init__(self) -> None:
        self.jobs: list[list[str]] = []

    def batch(self, items, rows, runtime_s) -> None:
        self.jobs.append([p.task_id for p in items])

    def close(self) -> None:
        pass


def make_service(pg_url: str, redis_url: str, queue: str, embedder=None, **overrides) -> Service:
    batch = overrides.pop("batch", BatchSettings(max_size=8, max_wait_ms=20))
    settings = Settings(database_url=pg_url, broker_url=redis_url, queue=queue, embedder="fake:32", batch=batch,
                        head_refresh_s=0.5, **overrides)
    res = WorkerResources(settings, embedder=embedder or FakeEmbedder(32))
    return Service(settings, res, events=Recorder(), revoked=lambda: ())


def start(services, *args, **kwargs) -> Service:
    s = make_service(*args, **kwargs)
    services.append(s)
    s.start()
    return s


def wait_for(cond, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met after {timeout}s")
        time.sleep(0.05)


def count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM predictions")).scalar_one()


def test_single_and_multi_text_tasks_flow_and_are_acked(clean_db, pg_url, redis_url, queue, services):
    tiny_head(clean_db)
    client = Client(redis_url, queue)
    singles = client.classify_many("tiny", [f"single {i}" for i in range(30)], per_task=1)
    multi = client.classify_many("tiny", [f"multi {i}" for i in range(50)] + [""], per_task=20)
    client.close()
    s = start(services, pg_url, redis_url, queue)
    wait_for(lambda: count(clean_db) == 81, what="81 rows")
    rows = rows_by_key(clean_db, sorted({r.task_id for r in singles + multi}))
    assert len(rows) == 81
    for ref in singles + multi[:-1]:
        assert rows[(ref.task_id, ref.item, "tiny")]["status"] == "ok"
    bad = rows[(multi[-1].task_id, multi[-1].item, "tiny")]
    assert bad["status"] == "error" and "is empty" in bad["error"]
    assert {ref.task_id for ref in multi} == {multi[0].task_id, multi[20].task_id, multi[40].task_id}
    wait_for(lambda: s.inflight.held() == 0, what="in-flight empty")  # acked after commit
    assert s.status()["receiving"] and s.status()["batches"] >= 1


def test_a_started_worker_sets_its_gil_switch_interval_and_zero_leaves_it(clean_db, pg_url, redis_url, queue,
                                                                         services):
    sys.setswitchinterval(0.005)  # (the services fixture restores the interval afterwards)
    start(services, pg_url, redis_url, queue, gil_switch_ms=0)
    assert sys.getswitchinterval() == pytest.approx(0.005)  # 0: Python's own interval stays
    start(services, pg_url, redis_url, queue)  # the default, 0.5 ms
    assert sys.getswitchinterval() == pytest.approx(Settings().gil_switch_ms / 1000) == pytest.approx(0.0005)


def test_a_started_worker_freezes_what_it_loaded_and_sets_its_gc_threshold_until_it_stops(
        clean_db, pg_url, redis_url, queue, services):
    before = gc.get_threshold()
    s = start(services, pg_url, redis_url, queue, gc_threshold=0)  # 0: Python's own settings, nothing frozen
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
    s.stop(timeout_s=5)
    s = start(services, pg_url, redis_url, queue)  # the default
    frozen = gc.get_freeze_count()
    assert frozen > 10_000 and gc.get_threshold() == (Settings().gc_threshold, before[1], before[2]) == \
        (10_000, before[1], before[2])
    assert s.inflight.wid.encode() in redis.Redis.from_url(redis_url).hkeys("embedclf:workers")  # serving
    s.stop(timeout_s=5)
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


def test_poison_entries_each_get_one_row_and_valid_tasks_around_them_are_served(clean_db, pg_url, redis_url, queue,
                                                                                  services):
    tiny_head(clean_db)
    r = redis.Redis.from_url(redis_url)
    client = Client(redis_url, queue)
    before = client.classify_many("tiny", ["before 1", "before 2"], per_task=1)
    poison = [b"not json", b"[1,2]", b'{"headers": [1], "body": "x"}', b"\xff\xfe\xfd", b"[" * 50_000 + b"]" * 50_000,
              b'{"body": "e30=", "content-type": "application/json", '
              b'"headers": {"task": "embedclf.classify", "id": "np"}}']
    r.lpush(queue, *poison)
    after = client.classify_many("tiny", ["after 1", "after 2"], per_task=1)
    client.close()
    s = start(services, pg_url, redis_url, queue)
    wait_for(lambda: count(clean_db) == 10, what="10 rows")
    time.sleep(0.3)
    assert count(clean_db) == 10  # exactly one row each, nothing more
    ok = repo.query_predictions(clean_db, task_ids=[x.task_id for x in before + after], limit=None)
    assert len(ok) == 4 and all(row["status"] == "ok" for row in ok)
    errors = repo.query_predictions(clean_db, status="error", limit=None)
    assert len(errors) == 6 and all(row["error"] for row in errors)
    assert {row["task_id"] for row in errors} >= {"np"}
    wait_for(lambda: s.inflight.held() == 0, what="poison acked")
    assert r.llen(queue) == 0 and s.receiver.thread.is_alive()


def test_a_message_whose_workers_died_runs_alone_and_gives_up_after_max_attempts(clean_db, pg_url, redis_url, queue,
                                                                                   services):
    tiny_head(clean_db)
    from embedclf.envelope import encode

    r = redis.Redis.from_url(redis_url)
    retried = [encode("embedclf.classify", f"retried-{i}", {"head": "tiny", "text": f"r {i}"}, queue) for i in range(2)]
    poison = encode("embedclf.classify", "poison", {"heads": ["tiny", "other"], "text": "boom"}, queue)
    fresh = [encode("embedclf.classify", f"fresh-{i}", {"head": "tiny", "text": f"f {i}"}, queue) for i in range(5)]
    for raw in retried:
        r.hset(DEATHS, hashlib.sha1(raw).hexdigest(), 1)
    r.hset(DEATHS, hashlib.sha1(poison).hexdigest(), 3)
    r.lpush(queue, *retried, poison, *fresh)
    s = start(services, pg_url, redis_url, queue, batch=BatchSettings(max_size=64, max_wait_ms=200))
    wait_for(lambda: count(clean_db) == 9, what="9 rows")
    # the after-commit hook runs once the rows are committed and acked: wait for it, not only the rows
    wait_for(lambda: sum(len(j) for j in s.events.jobs) == 8, what="8 messages reported")
    jobs = s.events.jobs
    assert sorted(len(j) for j in jobs) == [1, 1, 6]  # the two retried ones alone; poison + fresh together
    rows = {(row["task_id"], row["head_name"]): row for row in repo.query_predictions(clean_db, limit=None)}
    assert all(rows[(f"retried-{i}", "tiny")]["status"] == "ok" for i in range(2))
    for head in ("tiny", "other"):
        assert "gave up after 3 failed attempts" in rows[("poison", head)]["error"]
    wait_for(lambda: r.hlen(DEATHS) == 0, what="death counts forgotten")


class Flaky(FakeEmbedder):
    """Runs out of (GPU) memory on its first calls, then works."""

    def __init__(self, failures: int) -> None:
        super().__init__(32)
        self.failures = failures

    def embed_batch(self, texts):
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return super().embed_batch(texts)


def test_a_transient_embedder_failure_is_retried_not_written_and_not_charged(clean_db, pg_url, redis_url, queue,
                                                                              services):
    tiny_head(clean_db)
    client = Client(redis_url, queue)
    refs = client.classify_many("tiny", [f"t {i}" for i in range(5)], per_task=1)
    client.close()
    start(services, pg_url, redis_url, queue, embedder=Flaky(3))
    wait_for(lambda: count(clean_db) == 5, what="5 rows")
    rows = repo.query_predictions(clean_db, task_ids=[x.task_id for x in refs], limit=None)
    assert all(row["status"] == "ok" for row in rows)
    assert redis.Redis.from_url(redis_url).hlen(DEATHS) == 0


def test_a_head_that_cannot_be_loaded_is_isolated(clean_db, pg_url, redis_url, queue, services, caplog):
    tiny_head(clean_db, "good")
    tiny_head(clean_db, "broken")
    with clean_db.begin() as conn:  # a config key written by a newer release
        conn.execute(text("UPDATE heads SET config = config || '{\"future_key\": 1}' WHERE name = 'broken'"))
    client = Client(redis_url, queue)
    refs = client.classify_many(["good", "broken"], ["hello", "there"], per_task=2)
    client.close()
    caplog.set_level(logging.ERROR, logger="worker.resources")
    s = start(services, pg_url, redis_url, queue)
    wait_for(lambda: count(clean_db) == 4, what="4 rows")
    rows = rows_by_key(clean_db, [refs[0].task_id])
    for item in (0, 1):
        assert rows[(refs[0].task_id, item, "good")]["status"] == "ok"
        err = rows[(refs[0].task_id, item, "broken")]
        assert err["status"] == "error" and "head 'broken' cannot be loaded: v1: HeadLoadError" in err["error"]
        assert "future_key" in err["error"]
    assert any("head broken v1 cannot be loaded" in r.getMessage() for r in caplog.records)
    assert s.res.metrics.head_load_failures._value.get() == 1
    assert redis.Redis.from_url(redis_url).hlen(DEATHS) == 0
    # fixed by activating a loadable version: served again
    tiny_head(clean_db, "broken")
    time.sleep(1.2)  # past the head refresh interval
    client = Client(redis_url, queue)
    [ref] = client.classify_many("broken", ["again"], per_task=1)
    client.close()
    wait_for(lambda: count(clean_db) == 5, what="5 rows")
    assert rows_by_key(clean_db, [ref.task_id])[(ref.task_id, 0, "broken")]["status"] == "ok"


def test_a_reused_task_id_is_recorded_not_mixed_and_a_redelivery_is_a_no_op(clean_db, pg_url, redis_url, queue,
                                                                             services):
    tiny_head(clean_db)
    tiny_head(clean_db, "other")
    from embedclf.envelope import encode

    r = redis.Redis.from_url(redis_url)
    first = encode("embedclf.classify", "dup", {"head": "tiny", "text": "first task"}, queue)
    s = start(services, pg_url, redis_url, queue)
    r.lpush(queue, first)
    wait_for(lambda: count(clean_db) == 1, what="first row")
    r.lpush(queue, first)  # a redelivery of the same message
    r.lpush(queue, encode("embedclf.classify", "dup", {"head": "other", "text": "another task"}, queue))
    r.lpush(queue, encode("embedclf.classify", "dup", {"head": "tiny", "text": "yet another"}, queue))
    wait_for(lambda: s.res.metrics.task_id_conflicts._value.get() == 2, what="2 conflicts")
    wait_for(lambda: s.inflight.held() == 0, what="all acked")
    rows = repo.query_predictions(clean_db, task_ids=["dup"], limit=None)
    assert [(row["head_name"], row["text"]) for row in rows] == [("tiny", "first task")]
    with clean_db.connect() as conn:
        conflicts = conn.execute(text("SELECT task_id, heads, n_texts FROM task_conflicts ORDER BY id")).all()
    assert [(c.task_id, c.heads, c.n_texts) for c in conflicts] == [("dup", ["other"], 1), ("dup", ["tiny"], 1)]


def test_postgres_down_at_start_and_later_holds_messages_without_spinning_or_charging(clean_db, pg_url, redis_url,
                                                                                       queue, services, caplog):
    from urllib.parse import urlsplit

    from sqlalchemy.engine import make_url

    tiny_head(clean_db)
    pg = urlsplit(pg_url.replace("postgresql+psycopg2", "postgresql"))
    proxy = TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    proxied = make_url(pg_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    caplog.set_level(logging.WARNING)
    client = Client(redis_url, queue)
    refs = client.classify_many("tiny", [f"t {i}" for i in range(10)], per_task=1)
    try:
        s = start(services, proxied, redis_url, queue)  # Postgres unreachable at start
        time.sleep(3)
        assert count(clean_db) == 0 and s.inflight.held() == 10  # held, not requeued
        lines = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
        assert 1 <= len(lines) <= 3, lines  # one line per interval, not one per retry
        proxy.start()
        wait_for(lambda: count(clean_db) == 10, what="rows after the database came back")
        proxy.cut()  # and an outage while running
        more = client.classify_many("tiny", [f"u {i}" for i in range(5)], per_task=1)
        time.sleep(2)
        assert count(clean_db) == 10
        proxy.start()
        wait_for(lambda: count(clean_db) == 15, what="rows after the second outage")
        assert len(repo.query_predictions(clean_db, task_ids=[x.task_id for x in refs + more], limit=None)) == 15
        assert redis.Redis.from_url(redis_url).hlen(DEATHS) == 0
    finally:
        client.close()
        proxy.stop()


def test_stop_finishes_the_batch_in_hand_and_returns_the_rest_uncharged(clean_db, pg_url, redis_url, queue, services):
    tiny_head(clean_db)
    client = Client(redis_url, queue)
    client.classify_many("tiny", [f"t {i}" for i in range(12)], per_task=1)
    client.close()
    slow = FakeEmbedder(32, delay_s=1.0)
    s = make_service(pg_url, redis_url, queue, embedder=slow, batch=BatchSettings(max_size=4, max_wait_ms=10))
    s.start()
    wait_for(lambda: len(slow.calls) >= 2, what="a batch in progress")  # the first call is the warm-up
    s.stop(timeout_s=10)
    s.res.close()
    r = redis.Redis.from_url(redis_url)
    written = count(clean_db)
    assert written >= 4 and written % 4 == 0  # whole batches only
    assert r.llen(queue) == 12 - written  # the rest went straight back
    assert r.hlen(DEATHS) == 0 and r.hget(REGISTRY, s.inflight.wid) is None


def test_a_batch_longer_than_the_heartbeat_ttl_is_not_taken_from_its_live_worker(clean_db, pg_url, redis_url, queue,
                                                                                  services):
    tiny_head(clean_db)
    client = Client(redis_url, queue)
    refs = client.classify_many("tiny", [f"t {i}" for i in range(4)], per_task=1)
    client.close()
    slow = start(services, pg_url, redis_url, queue, embedder=FakeEmbedder(32, delay_s=3.5), heartbeat_ttl_s=1.0)
    wait_for(lambda: slow.inflight.held() == 4, what="the slow worker holds the 4 tasks")
    other = start(services, pg_url, redis_url, queue, heartbeat_ttl_s=1.0)  # sweeps every 0.5 s
    wait_for(lambda: count(clean_db) == 4, timeout=30, what="4 rows")
    time.sleep(1.0)
    rows = repo.query_predictions(clean_db, task_ids=[x.task_id for x in refs], limit=None)
    assert len(rows) == 4 and {row["worker"] for row in rows} == {slow.res.hostname}
    assert sum(len(j) for j in other.events.jobs) == 0  # nothing was taken from the live worker
    assert redis.Redis.from_url(redis_url).hlen(DEATHS) == 0


def test_batches_waiting_for_a_writer_are_committed_together_and_each_still_reported(clean_db, pg_url, redis_url,
                                                                                      queue, services):
    import threading

    tiny_head(clean_db)
    s = make_service(pg_url, redis_url, queue)
    gate, calls, real = threading.Event(), [], s.res.write_results

    def slow_write(rows, sizes=None, completed_at=None):  # the first commits wait: batches queue up behind them
        calls.append({r["task_id"] for r in rows})
        gate.wait(10)
        return real(rows, sizes, completed_at)

    s.res.write_results = slow_write
    services.append(s)
    client = Client(redis_url, queue)
    refs = client.classify_many("tiny", [f"text {i}" for i in range(120)], per_task=1)
    client.classify_many("tiny", ["first use"], task_ids=["same-id"])
    client.close()
    s.start()
    wait_for(lambda: s.writer.jobs.full(), what="a backlog of batches")  # 3 writers busy, 6 batches waiting
    r = redis.Redis.from_url(redis_url)
    from embedclf.envelope import encode
    r.lpush(queue, encode("embedclf.classify", "same-id", {"head": "tiny", "text": "another task"}, queue))
    gate.set()
    wait_for(lambda: count(clean_db) == 121, what="121 rows")
    wait_for(lambda: s.inflight.held() == 0, what="all acked")
    wait_for(lambda: sum(len(j) for j in s.events.jobs) == 122, what="every batch reported")
    sent = [tid for job in s.events.jobs for tid in job]
    assert sorted(sent) == sorted([x.task_id for x in refs] + ["same-id"] * 2)  # every batch reported once
    assert len(calls) < len(s.events.jobs)  # fewer commits than batches: some went together
    assert max(len(c) for c in calls) > 8  # a commit held more than one batch (max_size 8)
    wait_for(lambda: s.res.metrics.task_id_conflicts._value.get() == 1, what="the conflict")
    time.sleep(0.3)
    assert s.res.metrics.task_id_conflicts._value.get() == 1  # counted once, not once per grouped batch
    assert s.res.metrics.tasks.labels("ok")._value.get() == 121
    with clean_db.connect() as conn:  # batches committed together still have one completed_at each
        stamps = [set(ids) for ids, in conn.execute(text(
            "SELECT array_agg(task_id) FROM predictions GROUP BY completed_at"))]
    assert len(stamps) > len(calls) and max(len(ids) for ids in stamps) <= 8  # more stamps than commits
    # three threads committed groups of batches in parallel: still no stamp names two batches (each stamp's
    # tasks are one batch's) and every batch has rows under one stamp (the refused same-id's batch may have none)
    batches = [set(job) for job in s.events.jobs]
    assert all(any(ids <= b for b in batches) for ids in stamps)
    assert len(batches) - 1 <= len(stamps) <= len(batches)


def test_batches_longer_than_the_redis_health_check_interval_keep_their_busy_marks(clean_db, pg_url, redis_url, queue,
                                                                                  services, caplog):
    """A batch right after a long one used to lose its busy mark: redis-py PINGs a connection silent for its
    ``health_check_interval`` (30 s in the worker, 1 s here) and read the previous mark's waiting reply as
    the PING's; the check failed, so a death in that batch would not have been charged to it."""
    tiny_head(clean_db)
    s = make_service(pg_url, redis_url, queue, embedder=FakeEmbedder(32, delay_s=1.2),
                     batch=BatchSettings(max_size=4, max_wait_ms=20))
    s.res.redis.connection_pool.connection_kwargs["health_check_interval"] = 1
    services.append(s)
    client = Client(redis_url, queue)
    client.classify_many("tiny", [f"long batch {i}" for i in range(12)], per_task=1)
    client.close()
    with caplog.at_level(logging.WARNING, logger="worker"):
        s.start()
        wait_for(lambda: count(clean_db) == 12, what="12 rows")
    assert s.batches.thread.is_alive()
    assert [r.getMessage() for r in caplog.records if "cannot mark" in r.getMessage()] == []
