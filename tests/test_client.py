"""The producer client against a private redis-server: payload limit, multi-text tasks, outages, exactly-once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import redis

from embedclf.client import CHUNK_MESSAGES, MARKER_PREFIX, BrokerUnavailable, Client, PayloadTooLarge
from embedclf.envelope import decode
from tests.helpers import PersistentRedis, free_port, queued

pytestmark = [pytest.mark.redis]


@pytest.fixture
def server(tmp_path):
    s = PersistentRedis(free_port(), tmp_path)
    yield s
    s.stop()


def test_single_text_tasks_carry_text_request_id_and_enqueue_time(server):
    server.start()
    client = Client(server.url, enqueue_retry_s=5)
    try:
        [ref] = client.classify_many("h", ["héllo 👋"], request_ids=["r1"], per_task=1)
        tid = client.classify(["a", "b"], "two heads", task_id="chosen-id").task_id
    finally:
        client.close()
    (qid, raw, kwargs), (qid2, _, kwargs2) = queued(server.port)
    assert (ref.task_id, ref.item) == (qid, 0) and kwargs["text"] == "héllo 👋" and kwargs["request_id"] == "r1"
    assert abs(kwargs["enqueued_at"] - time.time()) < 60
    assert (tid, qid2, kwargs2["heads"], kwargs2["text"]) == ("chosen-id", "chosen-id", ["a", "b"], "two heads")
    d = decode(raw, 1 << 20)  # exactly what a worker decodes
    assert d.ok and d.task_id == qid and d.kwargs == kwargs


def test_multi_text_tasks_address_each_text_by_task_and_item(server):
    server.start()
    client = Client(server.url)
    try:
        refs = client.classify_many("h", [f"text {i}" for i in range(10)], request_ids=[f"r{i}" for i in range(10)],
                                    per_task=4)
    finally:
        client.close()
    msgs = queued(server.port)
    assert [len(kw["texts"]) for _, _, kw in msgs] == [4, 4, 2]
    for i, ref in enumerate(refs):
        tid, _, kwargs = next(m for m in msgs if m[0] == ref.task_id)
        assert kwargs["texts"][ref.item] == f"text {i}" and kwargs["request_ids"][ref.item] == f"r{i}"


def test_payload_limit_is_the_workers_raw_size_limit_and_refuses_before_sending(server):
    server.start()
    client = Client(server.url, max_payload_bytes=2048, enqueue_retry_s=5)
    try:
        # a multi-text task that would be too large is split into smaller tasks, each under the limit
        refs = client.classify_many("h", ["x" * 300] * 12)
        msgs = queued(server.port)
        assert len(msgs) > 1 and all(len(raw) <= 2048 for _, raw, _ in msgs)
        assert sum(len(kw["texts"]) for _, _, kw in msgs) == 12 == len(refs)
        assert all(decode(raw, 2048).ok for _, raw, _ in msgs)  # the worker accepts every one
        with pytest.raises(PayloadTooLarge, match=r"payload is \d+ bytes \(max 2048"):
            client.classify_many("h", ["fine", "x" * 3000, "also fine"], per_task=1)
        with pytest.raises(PayloadTooLarge, match=r"payload is \d+ bytes \(max 2048"):
            client.classify_many("h", ["fine", "x" * 3000, "also fine"])
        assert len(queued(server.port)) == len(msgs)  # nothing of the refused calls was sent
    finally:
        client.close()


def test_a_chunk_is_pushed_once_even_when_its_reply_is_lost(server):
    """The retry of a chunk whose first push was applied (reply lost) is a no-op: its marker is set."""
    server.start()
    client = Client(server.url)
    r = redis.Redis(port=server.port)
    try:
        marker = MARKER_PREFIX + "test"
        client.redis.ping()  # connects and loads the push script
        assert client._push(keys=["celery", marker], args=[60, b"m1", b"m2"]) == 2
        assert client._push(keys=["celery", marker], args=[60, b"m1", b"m2"]) == -1
        assert r.llen("celery") == 2 and 0 < r.ttl(marker) <= 60
    finally:
        client.close()


def test_a_broker_url_whose_password_cuts_the_host_off_is_refused_before_anything_is_sent():
    # unencoded, the "/" ends the host part: redis-py would send these tasks to localhost:6379, DB 0
    with pytest.raises(ValueError) as info:
        Client("redis://:/secret-pw@127.0.0.1:1/0")
    assert "broker_url" in str(info.value) and "%2F" in str(info.value) and "secret" not in str(info.value)


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
    assert "secret" not in msg and info.value.sent == [] and info.value.refs == []


def test_broker_that_comes_up_within_the_bound_gets_every_task_exactly_once(server):
    threading.Timer(2.0, server.start).start()  # the broker is down when the producer starts
    client = Client(server.url, enqueue_retry_s=20)
    t0 = time.monotonic()
    try:
        refs = client.classify_many("h", [f"text {i}" for i in range(300)], per_task=1)
    finally:
        client.close()
    assert time.monotonic() - t0 >= 1.5  # it did wait for the broker
    counts = Counter(tid for tid, _, _ in queued(server.port))
    assert set(counts) == {r.task_id for r in refs} and len(refs) == 300
    assert max(counts.values()) == 1


def test_outage_in_the_middle_of_a_bulk_send_loses_and_doubles_nothing(server):
    server.start()
    client = Client(server.url, enqueue_retry_s=20)
    n = 30_000
    result: dict = {}

    def send() -> None:
        try:
            result["refs"] = client.classify_many("h", [f"text {i}" for i in range(n)], per_task=1)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 30
    while redis.Redis(port=server.port).llen("celery") < 2 * CHUNK_MESSAGES and time.monotonic() < deadline:
        time.sleep(0.005)
    at_kill = redis.Redis(port=server.port).llen("celery")
    server.kill()  # mid-stream, kill -9 (append-only file, fsync always: what was acknowledged survives)
    time.sleep(2)
    server.start()
    sender.join(timeout=120)
    client.close()
    assert "error" not in result, result.get("error")
    counts = Counter(tid for tid, _, _ in queued(server.port))
    missing = {r.task_id for r in result["refs"]} - set(counts)
    duplicates = sum(c - 1 for c in counts.values())
    print(f"\nproducer outage mid-send: {n} tasks, {len(counts)} distinct queued, {len(missing)} missing, "
          f"{duplicates} duplicated")
    assert at_kill < n  # Redis really died in the middle of the send
    assert not missing
    assert duplicates == 0  # a chunk's marker makes the retry of an applied push a no-op
