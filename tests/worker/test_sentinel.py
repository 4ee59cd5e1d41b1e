"""Redis with Sentinel: a primary, a replica and a sentinel on free ports; the primary is killed while tasks flow.

The worker, the client and ``embedclf enqueue``/``health`` use ``sentinel://`` URLs. After the failover
every task a producer was told was enqueued **with** ``wait_replicas=1`` has exactly one row. A second
producer without it measures what asynchronous replication can lose: pushes the old primary
acknowledged but had not yet sent to the replica when it died.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid

import pytest
import redis
import redis.sentinel
from click.testing import CliRunner
from redis.sentinel import Sentinel

from embedclf.cli import cli
from embedclf.client import Client
from embedclf.config import Settings
from tests.conftest import settings_env
from tests.helpers import free_port, rows_by_key, tiny_head

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]
MASTER = "mymaster"


class RedisNode:
    def __init__(self, workdir, port: int, *args: str) -> None:
        self.workdir, self.port, self.args = workdir, port, args
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.workdir.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                                      str(self.workdir), "--save", "", "--appendonly", "yes", *self.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def sentinel_setup(tmp_path):
    p, r, s = free_port(), free_port(), free_port()
    primary = RedisNode(tmp_path / "p", p)
    replica = RedisNode(tmp_path / "r", r, "--replicaof", "127.0.0.1", str(p))
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {s}\nbind 127.0.0.1\nsentinel monitor {MASTER} 127.0.0.1 {p} 1\n"
                    f"sentinel down-after-milliseconds {MASTER} 1000\nsentinel failover-timeout {MASTER} 5000\n"
                    f"logfile {tmp_path / 'sentinel.log'}\n")
    primary.start()
    replica.start()
    sentinel = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    watch = Sentinel([("127.0.0.1", s)], socket_timeout=1)
    deadline = time.monotonic() + 20
    while True:  # the sentinel knows the primary and its replica
        try:
            if watch.discover_master(MASTER) == ("127.0.0.1", p) and watch.discover_slaves(MASTER):
                break
        except Exception:  # noqa: BLE001
            pass
        assert time.monotonic() < deadline, "sentinel did not come up"
        time.sleep(0.2)
    yield {"url": f"sentinel://127.0.0.1:{s}/0", "primary": primary, "replica": replica, "watch": watch,
           "log": tmp_path / "sentinel.log"}
    sentinel.terminate()
    sentinel.wait(10)
    for node in (primary, replica):
        node.kill()


def test_failover_while_tasks_flow(settings, clean_db, start_worker, sentinel_setup, tmp_path):
    url, watch = sentinel_setup["url"], sentinel_setup["watch"]
    tiny_head(clean_db)
    wsettings = Settings(database_url=settings.database_url, broker_url=url, queue=settings.queue)
    env = settings_env(wsettings, EMBEDCLF_EMBEDDER="fake:32", EMBEDCLF_BROKER_SENTINEL_MASTER=MASTER,
                       EMBEDCLF_HEARTBEAT_TTL_S="5")
    worker = start_worker(env, name="w-sentinel")
    worker.wait_ready()

    # the CLI speaks sentinel too
    cli_env = {"EMBEDCLF_DATABASE_URL": settings.database_url, "EMBEDCLF_BROKER_URL": url,
               "EMBEDCLF_BROKER_SENTINEL_MASTER": MASTER, "EMBEDCLF_QUEUE": settings.queue}
    data = tmp_path / "texts.txt"
    data.write_text("from the cli\nover sentinel\n")
    r = CliRunner().invoke(cli, ["enqueue", "--head", "tiny", "--file", str(data), "--quiet", "--ids-out",
                                 str(tmp_path / "ids.tsv")], env=cli_env)
    assert r.exit_code == 0, r.output + r.stderr
    health = CliRunner().invoke(cli, ["health", "--live"], env=cli_env)
    assert health.exit_code == 0, health.output + health.stderr

    sent: dict[str, list[str]] = {"durable": [], "async": []}
    stop = threading.Event()

    def produce(kind: str, wait_replicas: int) -> None:
        client = Client(url, settings.queue, sentinel_master=MASTER, wait_replicas=wait_replicas, enqueue_retry_s=60)
        while not stop.is_set():
            ids = [f"{kind}-{uuid.uuid4()}" for _ in range(5)]
            client.classify_many("tiny", [f"text {i}" for i in ids], task_ids=ids)
            sent[kind].extend(ids)  # reported as enqueued
            time.sleep(0.01)
        client.close()

    threads = [threading.Thread(target=produce, args=(k, w)) for k, w in (("durable", 1), ("async", 0))]
    for t in threads:
        t.start()
    time.sleep(3)
    old = watch.discover_master(MASTER)
    sentinel_setup["primary"].kill()  # the primary dies while tasks flow
    t0 = time.monotonic()
    while True:
        try:
            if watch.discover_master(MASTER) != old:
                break
        except redis.sentinel.MasterNotFoundError:
            pass  # between the primary's death and the promotion
        # Sentinel promotes in ~1-2 s here, but a sentinel whose timer stalls for 2 s (a loaded 2-core CI VM)
        # enters TILT mode and does nothing for 30 s: one CI run waited just past 30 s. 75 s covers a TILT.
        assert time.monotonic() - t0 < 75, "no failover:\n" + sentinel_setup["log"].read_text()[-3000:]
        time.sleep(0.1)
    failover_s = time.monotonic() - t0
    sentinel_setup["primary"].start()  # it comes back as a replica of the new primary
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join(120)

    from_file = [line.split("\t")[0] for line in (tmp_path / "ids.tsv").read_text().splitlines()]
    ids = sent["durable"] + sent["async"] + from_file
    deadline = time.monotonic() + 90
    while True:
        rows = rows_by_key(clean_db, ids)
        have = {k[0] for k in rows}
        if set(sent["durable"]) <= have or time.monotonic() > deadline:
            break
        time.sleep(1)
    time.sleep(3)  # let anything redelivered land, to see duplicates if there were any
    rows = rows_by_key(clean_db, ids)
    keys = [k for k in rows]
    assert len(keys) == len(set(keys))  # one row per (task, item, head): never two
    lost_durable = [t for t in sent["durable"] if (t, 0, "tiny") not in rows]
    lost_async = [t for t in sent["async"] if (t, 0, "tiny") not in rows]
    print(f"\nsentinel failover after {failover_s:.1f}s: {len(sent['durable'])} tasks sent with wait_replicas=1, "
          f"{len(lost_durable)} lost; {len(sent['async'])} sent without, {len(lost_async)} lost")
    assert lost_durable == [], lost_durable
    assert all(row["status"] == "ok" for row in rows.values())
    assert worker.alive()


def test_busy_marks_go_to_the_primary_the_sentinel_names(sentinel_setup):
    """A worker's busy marks travel on a connection of their own: it must ask the sentinel for the primary too.
    (redis-py 8 connects a bare connection's first command to its default address, 127.0.0.1:6379, without
    asking: the marks then missed the primary, and a worker's death there would not be charged.)"""
    from embedclf.redis_conn import redis_client
    from worker.inflight import Inflight

    probe = Inflight(redis_client(sentinel_setup["url"], sentinel_master=MASTER), f"sentinel-probe-{uuid.uuid4()}")
    primary = redis.Redis(port=sentinel_setup["primary"].port)
    default = redis.Redis(socket_connect_timeout=1)  # the address redis-py falls back to
    try:
        probe.register()
        token = probe.mark_busy([1, 2, 3])
        probe.flush_marks()
        assert primary.get(probe.busy_key) == b"1,2,3"
        try:
            assert not default.exists(probe.busy_key)
        except redis.ConnectionError:
            pass  # nothing listens there: nothing can land there either
        probe.clear_busy(token)
        assert not primary.exists(probe.busy_key)
        assert probe.unregister() == 0
    finally:
        try:
            default.delete(probe.busy_key)
        except redis.ConnectionError:
            pass
        probe.client.close()
