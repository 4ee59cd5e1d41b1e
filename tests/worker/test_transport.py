"""worker.transport: receiving with BLMOVE into a landing list closes kombu's kill -9 loss window."""

from __future__ import annotations


import time

import pytest
import redis

from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.store import repository as repo
from tests.conftest import settings_env
from tests.worker.test_e2e import produce, wait_rows
from worker import transport

pytestmark = [pytest.mark.redis]


@pytest.fixture
def r(settings):
    client = redis.Redis.from_url(settings.broker_url)
    client.delete(settings.queue, transport.REGISTRY)
    yield client
    client.flushdb()


def test_sweep_gives_back_only_the_lists_of_dead_channels(r, settings):
    q = settings.queue
    r.lpush("embedclf:landing:alive1", "m-alive")
    r.set(transport.alive_key("embedclf:landing:alive1"), q, ex=30)
    r.lpush("embedclf:landing:dead1", "m-dead-1", "m-dead-2")  # its owner died in the window
    r.hset(transport.REGISTRY, mapping={"embedclf:landing:alive1": q, "embedclf:landing:dead1": q})
    r.rpush(q, "queued")
    assert transport.sweep(r) == 2
    # back at the consuming (right) end, the oldest landed message first out... nothing lost or doubled
    assert sorted(r.lrange(q, 0, -1)) == [b"m-dead-1", b"m-dead-2", b"queued"]
    assert r.rpop(q) in (b"m-dead-1", b"m-dead-2")
    assert not r.exists("embedclf:landing:dead1")
    assert r.hkeys(transport.REGISTRY) == [b"embedclf:landing:alive1"]
    assert r.lrange("embedclf:landing:alive1", 0, -1) == [b"m-alive"]  # a live channel's list is its own
    assert transport.restore(r, "embedclf:landing:alive1", q) == -1
    assert transport.restore(r, "embedclf:landing:alive1", q, force=True) == 1  # what a closing channel does
    assert r.hlen(transport.REGISTRY) == 0 and r.llen(q) == 3


@pytest.mark.slow
@pytest.mark.postgres
def test_a_message_stranded_by_a_dead_receiver_is_restored_and_classified(r, settings, clean_db, start_worker,
                                                                          tmp_path):
    head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
    repo.add_head_version(clean_db, "tiny", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
    ids = [f"stranded-{i}" for i in range(3)]
    produce(settings.broker_url, [{"id": t, "kwargs": {"head": "tiny", "text": f"text {t}"}} for t in ids], tmp_path)
    # exactly what a worker killed right after BLMOVE leaves behind: the messages are in its
    # landing list only (not in the queue, not in kombu's unacked hash), and its alive key is gone
    dead = "embedclf:landing:killed-worker"
    for _ in ids:
        assert r.blmove(settings.queue, dead, 1, "RIGHT", "LEFT") is not None
    r.hset(transport.REGISTRY, dead, settings.queue)
    assert r.llen(settings.queue) == 0 and r.hlen("unacked") == 0
    w = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32"), name="w-sweeper")
    w.wait_ready()
    rows = wait_rows(clean_db, ids, w, timeout=60)
    assert sorted(rows) == sorted(ids) and all(row["status"] == "ok" for row in rows.values())
    assert "restored 3 message(s) from embedclf:landing:killed-worker" in w.log()
    assert not r.exists(dead) and not r.hexists(transport.REGISTRY, dead)
    # the live worker receives through its own registered landing list and leaves no copy there
    live = [k.decode() for k in r.hkeys(transport.REGISTRY)]
    assert len(live) == 1 and r.exists(transport.alive_key(live[0]))
    more = [f"fresh-{i}" for i in range(20)]
    produce(settings.broker_url, [{"id": t, "kwargs": {"head": "tiny", "text": t}} for t in more], tmp_path)
    assert len(wait_rows(clean_db, more, w, timeout=60)) == 20
    # delivered copies are trimmed in bulk, at the latest when the queue runs dry (BLMOVE timeout, 1 s)
    deadline = time.monotonic() + 10
    while r.llen(live[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.llen(live[0]) == 0
    assert w.stop(timeout=60) == 0
    assert r.hlen(transport.REGISTRY) == 0, w.log()[-3000:]  # a clean close unregisters its landing list
