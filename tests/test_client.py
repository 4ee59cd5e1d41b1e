"""The producer helper against a private redis-server: payload limit, broker outages, exactly-once enqueue."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter

import pytest
import redis

from embedclf.client import BrokerUnavailable, Client, PayloadTooLarge, body_size
from tests.worker.test_redis_auth import free_port
from tests.worker.test_redis_restart import PersistentRedis

pytestmark = [pytest.mark.redis]


def queued(port: int, queue: str = "celery") -> list[tuple[str, int, dict]]:
    """(task id, raw body bytes, kwargs) of every message waiting in ``queue``."""
    out = []
    for raw in redis.Redis(port=port).lrange(queue, 0, -1):
        msg = json.loads(raw)
        body = base64.b64decode(msg["body"])
        out.append((msg["headers"]["id"], len(body), json.loads(body)[1]))
    return out


@pytest.fixture
def server(tmp_path):
    s = PersistentRedis(free_port(), tmp_path)
    yield s
    s.stop()


def test_payload_limit_matches_the_bytes_on_the_wire_and_refuses_before_sending(server):
    server.start()
    client = Client(f"redis://127.0.0.1:{server.port}/0", max_payload_bytes=2048, enqueue_retry_s=5)
    try:
        [tid] = client.classify_many("h", ["héllo 👋"], request_ids=["r1"])
        [(qid, size, kwargs)] = queued(server.port)
        assert qid == tid and kwargs["text"] == "héllo 👋" and kwargs["request_id"] == "r1"
        # the client measures exactly what the worker will measure (the serialized body)
        assert body_size(kwargs) == size
        with pytest.raises(PayloadTooLarge, match=r"payload is \d+ bytes \(max 2048"):
            client.classify_many("h", ["fine", "x" * 3000, "also fine"])
        assert len(queued(server.port)) == 1  # nothing of the refused call was sent
    finally:
        client.close()


def test_broker_down_the_whole_time_fails_after_the_retry_bound(server):
    client = Client(f"redis://:secret@127.0.0.1:{server.port}/0", enqueue_retry_s=2)  # nothing listens there
    t0 = time.monotonic()
    try:
        with pytest.raises(BrokerUnavailable) as info:
            client.classify_many("h", ["a", "b"])
    finally:
        client.close()
    elapsed = time.monotonic() - t0
    assert 2 <= elapsed < 6, elapsed
    msg = str(info.value)
    assert "unreachable" in msg and "EMBEDCLF_ENQUEUE_RETRY_S" in msg and "0 task(s) were enqueued" in msg
    assert "secret" not in msg and info.value.sent == []


def test_broker_that_comes_up_within_the_bound_gets_every_task_exactly_once(server):
    threading.Timer(2.0, server.start).start()  # the broker is down when the producer starts
    client = Client(f"redis://127.0.0.1:{server.port}/0", enqueue_retry_s=20)
    t0 = time.monotonic()
    try:
        ids = client.classify_many("h", [f"text {i}" for i in range(300)])
    finally:
        client.close()
    assert time.monotonic() - t0 >= 1.5  # it did wait for the broker
    counts = Counter(tid for tid, _, _ in queued(server.port))
    assert set(counts) == set(ids) and len(ids) == 300
    assert max(counts.values()) == 1


def test_outage_in_the_middle_of_a_bulk_send_is_retried_without_losing_a_task(server):
    server.start()
    client = Client(f"redis://127.0.0.1:{server.port}/0", enqueue_retry_s=20)
    n = 3_000
    result: dict = {}

    def send() -> None:
        try:
            result["ids"] = client.classify_many("h", [f"text {i}" for i in range(n)])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 30
    while redis.Redis(port=server.port).llen("celery") < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.stop()  # mid-stream (append-only file: what was queued survives)
    time.sleep(2)
    server.start()
    sender.join(timeout=120)
    client.close()
    assert "error" not in result, result.get("error")
    counts = Counter(tid for tid, _, _ in queued(server.port))
    missing = set(result["ids"]) - set(counts)
    duplicates = sum(c - 1 for c in counts.values())
    print(f"\nproducer outage mid-send: {n} tasks, {len(counts)} distinct queued, {len(missing)} missing, "
          f"{duplicates} duplicated")
    assert not missing
    # kombu retries only the publish that failed; a duplicate needs Redis to have stored it and died
    # before replying, so at most that one message can be doubled (its one row is still one row)
    assert duplicates <= 1
