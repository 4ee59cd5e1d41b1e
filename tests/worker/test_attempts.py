"""Attempt counting and poison-message handling in the worker's flush (real Redis + Postgres)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from kombu.message import Message
from sqlalchemy.exc import OperationalError

import worker.batching as batching
from embedclf.config import Settings
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.store import repository as repo
from worker.attempts import PREFIX, AttemptCounter
from worker.resources import reset_resources

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def counter(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield AttemptCounter(client, ttl_s=60)
    client.close()


def test_counter_begin_done_undo(counter):
    ids = [f"t-{uuid.uuid4()}" for _ in range(3)]
    assert counter.peek(ids) == dict.fromkeys(ids, 0)
    assert counter.begin(ids) == dict.fromkeys(ids, 1)
    assert counter.begin(ids[:1]) == {ids[0]: 2}
    assert 0 < counter.client.ttl(PREFIX + ids[0]) <= 60  # counts expire on their own
    counter.undo(ids[:1])
    assert counter.peek(ids) == dict.fromkeys(ids, 1)
    counter.done(ids)
    assert counter.peek(ids) == dict.fromkeys(ids, 0)


def test_counter_survives_a_dead_redis():
    dead = AttemptCounter(redis.Redis(port=1, socket_connect_timeout=0.2), ttl_s=60)
    assert dead.peek(["a"]) == {"a": 0} and dead.begin(["a"]) == {"a": 1}
    dead.done(["a"])
    dead.undo(["a"])


class RecordedMessage(Message):
    def __init__(self, task_id: str, kwargs: dict) -> None:
        super().__init__(body=json.dumps([[], kwargs, {}]).encode(), content_type="application/json",
                         content_encoding="utf-8", headers={"id": task_id, "task": "embedclf.classify"},
                         accept={"application/json"})
        self.outcome: list[str] = []

    def ack_log_error(self, logger, errors, **kw):
        self.outcome.append("ack")

    def reject_log_error(self, logger, errors, requeue=False, **kw):
        self.outcome.append("requeue" if requeue else "reject")


class StubTimer:
    def call_repeatedly(self, secs, fun):
        return type("Tref", (), {"cancel": lambda self: None})()


class StubConsumer:
    timer = StubTimer()
    connection_errors = ()


@pytest.fixture
def consumer(pg_url, redis_url, clean_db):
    head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
    repo.add_head_version(clean_db, "h", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
    settings = Settings(database_url=pg_url, broker_url=redis_url, embedder="fake:32", max_attempts=3)
    task = type("T", (), {"settings": settings})()
    reset_resources()
    c = batching.BatchConsumer(task, None, StubConsumer())
    yield c
    reset_resources()


def settle(c, timeout: float = 60.0) -> None:
    """Flush the buffer and wait for the runner thread's outcome to be settled (acks, rejects)."""
    c.flush()
    deadline = time.monotonic() + timeout
    while c._busy and time.monotonic() < deadline:
        c.runner.drain()
        time.sleep(0.005)
    assert not c._busy, "the batch did not finish"


def send(c, n: int, prefix: str = "m") -> list[RecordedMessage]:
    msgs = [RecordedMessage(f"{prefix}-{uuid.uuid4()}", {"head": "h", "text": f"text {i}"}) for i in range(n)]
    for m in msgs:
        c.on_message(m, None, None, None, None)
    settle(c)
    return msgs


def rows(engine, msgs):
    return {r["task_id"]: r for r in repo.query_predictions(engine, task_ids=[m.headers["id"] for m in msgs],
                                                            limit=None)}


def test_success_acks_and_forgets_attempts(consumer, clean_db):
    msgs = send(consumer, 4)
    assert [m.outcome for m in msgs] == [["ack"]] * 4
    assert all(r["status"] == "ok" for r in rows(clean_db, msgs).values())
    assert consumer.res.attempts.peek([m.headers["id"] for m in msgs]) == {m.headers["id"]: 0 for m in msgs}


def test_database_outage_requeues_without_charging_an_attempt(consumer, clean_db, monkeypatch):
    def down(items, res):
        raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(batching, "process_batch", down)
    msgs = send(consumer, 3)
    assert [m.outcome for m in msgs] == [["requeue"]] * 3  # back to the queue, not acked
    assert set(consumer.res.attempts.peek([m.headers["id"] for m in msgs]).values()) == {0}
    assert rows(clean_db, msgs) == {}


def test_other_failures_stay_counted_then_give_up(consumer, clean_db, monkeypatch):
    real = batching.process_batch
    monkeypatch.setattr(batching, "process_batch", lambda items, res: 1 / 0)
    (msg,) = send(consumer, 1)
    tid = msg.headers["id"]
    for expected in (1, 2):  # redelivered, fails again: requeued and counted each time
        assert consumer.res.attempts.peek([tid]) == {tid: expected}
        consumer.on_message(msg, None, None, None, None)
        settle(consumer)
    assert consumer.res.attempts.peek([tid]) == {tid: 3}
    monkeypatch.setattr(batching, "process_batch", real)
    consumer.on_message(msg, None, None, None, None)  # 4th delivery: max_attempts reached
    settle(consumer)
    assert msg.outcome == ["requeue"] * 3 + ["ack"]
    row = rows(clean_db, [msg])[tid]
    assert row["status"] == "error" and "gave up after 3 failed attempts" in row["error"]
    assert row["head_name"] == "h"


def test_retried_tasks_run_alone(consumer, clean_db, monkeypatch):
    """After a crash, each previously-seen task is processed in its own batch."""
    crashed = [RecordedMessage(f"c-{uuid.uuid4()}", {"head": "h", "text": f"crashed {i}"}) for i in range(3)]
    consumer.res.attempts.begin([m.headers["id"] for m in crashed])  # as if the worker died mid-batch
    fresh = [RecordedMessage(f"f-{uuid.uuid4()}", {"head": "h", "text": f"fresh {i}"}) for i in range(4)]
    sizes = []
    real = batching.process_batch

    def spy(items, res):
        sizes.append(len(items))
        return real(items, res)

    monkeypatch.setattr(batching, "process_batch", spy)
    for m in crashed + fresh:
        consumer.on_message(m, None, None, None, None)
    settle(consumer)
    assert sorted(sizes) == [1, 1, 1, 4]
    assert all(m.outcome == ["ack"] for m in crashed + fresh)
    assert all(r["status"] == "ok" for r in rows(clean_db, crashed + fresh).values())


def test_a_multi_head_task_that_gives_up_gets_an_error_row_per_head(consumer, clean_db):
    msg = RecordedMessage(f"mh-{uuid.uuid4()}", {"heads": ["h", "urgency"], "text": "poison", "request_id": "r-9"})
    tid = msg.headers["id"]
    for _ in range(3):  # three workers died holding it (max_attempts=3)
        consumer.res.attempts.begin([tid])
    consumer.on_message(msg, None, None, None, None)
    settle(consumer)
    assert msg.outcome == ["ack"]
    got = repo.query_predictions(clean_db, task_ids=[tid], limit=None)
    assert sorted(r["head_name"] for r in got) == ["h", "urgency"]
    assert all(r["status"] == "error" and "gave up after 3 failed attempts" in r["error"] and r["request_id"] == "r-9"
               for r in got)
