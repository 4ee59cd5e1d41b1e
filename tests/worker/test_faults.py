"""Every fault at once, while a producer enqueues: afterwards every task has exactly its rows, none lost or doubled.

Two worker processes (every other one started applies its heads on two text threads,
``EMBEDCLF_TEXT_THREADS=2``), a producer process sending 5,250 single-text tasks (250 invalid) and 40
multi-text tasks (1,000 texts, some bad), then:

1. ``kill -9`` of a worker **inside a batch**, at least 10 times (a new worker is started each time).
   "Inside" is read from Redis: a worker writes the tags of the batch it embeds to its *busy* key
   and its registry entry names its pid (``tests/faultkit.busy_batch``);
2. a Redis restart (append-only file on);
3. a 60 s Postgres outage (listener closed, every connection broken) that meets work: more tasks
   are sent as it starts. With ``EMBEDCLF_HEARTBEAT_TTL_S=5``, every batch caught by it is held
   twelve times longer than the heartbeat TTL: its worker must keep it (no other worker may take
   it back and process it again).

Checks: every enqueued (task, text) has exactly one row, valid ones ``ok`` and invalid ones
``error``; the killed workers' messages came back (each dead worker reaped once) and no live
worker was ever reaped; no death count is left behind.

The workers run the fake embedder with a 150 ms delay per embedding call: what is under test is the
queue, and a batch that lasts 150 ms gives the test time to kill a worker inside it; a worker starts
in about a second, so the ten replacements do not dominate the run. The real models' path through
a worker is tested end to end in test_e2e.py, test_multihead.py and test_e2e_llama.py.

Run it alone with ``.venv/bin/python -m pytest -m faults -s`` (it prints its figures).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
import redis
from sqlalchemy import bindparam, text
from sqlalchemy.engine import make_url

from embedclf.client import Client as Producer
from embedclf.config import BatchSettings, Settings
from embedclf.data import load_labeled
from embedclf.demo import HOLDOUT_CSV, TRAIN_CSV
from embedclf.embedders.fake import FakeEmbedder
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.store import repository as repo
from embedclf.training.trainer import TrainParams, train_head
from tests.conftest import settings_env
from tests.faultkit import TcpProxy, busy_batch
from tests.helpers import PersistentRedis, free_port
from worker.inflight import DEATHS, REGISTRY

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

N_VALID, N_INVALID = 5000, 250
N_MULTI_TASKS, PER_MULTI = 40, 25
KILLS = 10
OUTAGE_S = 60.0
OUTAGE_TASKS = 100
HEARTBEAT_TTL_S = 5
HEAD = "faults"

# A separate process, like another application: embedclf.client only, paced bursts of single-text tasks
# with chosen ids, and multi-text tasks in between.
PRODUCER = r"""
import json, sys, time
from embedclf.client import Client
broker, path, out, burst, pause = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
plan = json.load(open(path, encoding="utf-8"))
client = Client(broker, enqueue_retry_s=60)
multi = plan["multi"]
with open(out, "w") as f:
    for n, i in enumerate(range(0, len(plan["single"]), burst)):
        by_head = {}
        for tid, head, text in plan["single"][i:i + burst]:
            by_head.setdefault(head, []).append((tid, text))
        for head, items in by_head.items():
            client.classify_many(head, [t for _, t in items], task_ids=[tid for tid, _ in items])
            f.write("".join(f"{tid}\t0\t{'error' if tid.startswith('bad-') else 'ok'}\n" for tid, _ in items))
        if n < len(multi):
            refs = client.classify_many(plan["head"], multi[n], per_task=len(multi[n]))
            f.write("".join(f"{r.task_id}\t{r.item}\t{'ok' if t.strip() else 'error'}\n"
                            for r, t in zip(refs, multi[n])))
        f.flush()
        time.sleep(pause)
client.close()
"""


def make_plan() -> dict:
    rng = random.Random(5)
    pool = load_labeled(TRAIN_CSV).texts + load_labeled(HOLDOUT_CSV).texts
    single = [[f"ok-{i}", HEAD, " ".join(rng.sample(pool, 2))] for i in range(N_VALID)]
    bad = [(HEAD, ""), (HEAD, 12345), ("no-such-head", "where is my parcel"), (HEAD, "refund\x00now"),
           (HEAD, "x" * 20_001)]
    for i in range(N_INVALID):
        head, body = bad[i % len(bad)]
        single.insert(rng.randrange(len(single)), [f"bad-{i}", head, body])
    multi = [[" ".join(rng.sample(pool, 2)) if (k + j) % 10 else "" for j in range(PER_MULTI)]
             for k in range(N_MULTI_TASKS)]
    return {"single": single, "multi": multi, "head": HEAD}


def rows_of(engine, ids: list[str]) -> dict[tuple[str, int], list[str]]:
    q = text("SELECT task_id, item, status FROM predictions WHERE task_id IN :ids").bindparams(
        bindparam("ids", expanding=True))
    out: dict[tuple[str, int], list[str]] = {}
    with engine.connect() as conn:
        for tid, item, status in conn.execute(q, {"ids": ids}):
            out.setdefault((tid, item), []).append(status)
    return out


def kill_mid_batch(client: redis.Redis, workers: list, rng: random.Random, timeout: float = 120) -> tuple:
    """kill -9 a worker inside a batch; returns (worker, the batch's task ids)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = {w.pid: w for w in workers if w.alive()}
        found = busy_batch(client, set(live))
        if found is not None:
            pid, marker, ids = found
            time.sleep(rng.uniform(0.02, 0.12))  # land inside the embedding
            if busy_batch(client, {pid}) is None or busy_batch(client, {pid})[1] != marker:
                continue  # that batch moved on meanwhile: look again
            os.kill(pid, signal.SIGKILL)
            live[pid].proc.wait()
            return live[pid], ids
        time.sleep(0.005)
    raise AssertionError(f"no worker was inside a batch for {timeout}s")


def test_no_task_lost_or_duplicated_under_faults(engine, clean_db, pg_url, start_worker, tmp_path):
    t_start = time.monotonic()
    rng = random.Random(7)
    train = load_labeled(TRAIN_CSV)
    emb = FakeEmbedder(32)
    result = train_head(emb.embed(train.texts), train.labels, TrainParams(epochs=20))
    repo.add_head_version(clean_db, HEAD, HeadArtifact.from_head(result.head, result.labels, emb.model_id))

    redis_server = PersistentRedis(free_port(), tmp_path)
    redis_server.start()
    broker = redis_server.url
    pg = urlsplit(pg_url.replace("postgresql+psycopg2", "postgresql"))
    proxy = TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    proxy.start()
    proxied = make_url(pg_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    wsettings = Settings(database_url=proxied, broker_url=broker, embedder="fake:32?delay_ms=150",
                         batch=BatchSettings(max_size=32, max_wait_ms=50))
    # max attempts 5: a task may sit in two killed batches (a retried task runs alone and can be picked
    # again); the attempt limit itself is tested in test_pipeline.py
    env = settings_env(wsettings, EMBEDCLF_HEARTBEAT_TTL_S=str(HEARTBEAT_TTL_S), EMBEDCLF_MAX_ATTEMPTS="5")
    client = redis.Redis(port=redis_server.port)
    producer = None
    try:
        def new_worker(i: int):  # every other one with two text threads: the heads of two batches at once
            return start_worker(env if i % 2 == 0 else {**env, "EMBEDCLF_TEXT_THREADS": "2"}, name=f"w{i}")

        workers = [new_worker(i) for i in range(2)]
        for w in workers:
            w.wait_ready()

        plan = make_plan()
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        sent_path = tmp_path / "sent.txt"
        t_flow = time.monotonic()
        producer = subprocess.Popen([sys.executable, "-c", PRODUCER, broker, str(tmp_path / "plan.json"),
                                     str(sent_path), "60", "0.5"], env=env,
                                    stderr=(tmp_path / "producer.err").open("w"))

        # 1. kill -9 workers inside a batch, a new one each time
        killed_ids, uncommitted, killed = set(), set(), []
        for k in range(KILLS):
            victim, batch = kill_mid_batch(client, workers, rng)
            killed.append(victim)
            committed = len(rows_of(clean_db, sorted(batch)))
            if not committed:
                uncommitted |= batch  # killed before its INSERT: these must be processed again
            killed_ids |= batch
            print(f"\nkill {k + 1}: {victim.name} (pid {victim.pid}) mid-batch: {len(batch)} tasks, "
                  f"{committed} committed")
            workers.append(new_worker(len(workers)))

        # 2. restart Redis (append-only file on)
        t0 = time.monotonic()
        redis_server.stop()
        time.sleep(1)
        redis_server.start()
        redis_down = time.monotonic() - t0

        # 3. Postgres unreachable for OUTAGE_S, while tasks arrive
        time.sleep(3)
        t0 = time.monotonic()
        proxy.cut()
        late = Producer(broker, enqueue_retry_s=60)
        outage_refs = late.classify_many(HEAD, train.texts[:OUTAGE_TASKS], per_task=1)
        late.close()
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))
        held = sum(int(client.hlen(k)) for k in client.scan_iter("embedclf:w:*:inflight"))
        proxy.restore()
        outage = time.monotonic() - t0

        assert producer.wait(timeout=300) == 0, (tmp_path / "producer.err").read_text()[-3000:]
        sent = [line.split("\t") for line in sent_path.read_text().splitlines()]
        status = {(tid, int(item)): st for tid, item, st in sent} | {(r.task_id, r.item): "ok" for r in outage_refs}
        expected = set(status)
        n_single = N_VALID + N_INVALID
        assert len(sent) == n_single + N_MULTI_TASKS * PER_MULTI  # the producer rode out the Redis restart
        ids = sorted({tid for tid, _ in expected})

        # drain: until every text has its row, or nothing more can arrive
        deadline, stable_since, last = time.monotonic() + 300, time.monotonic(), -1
        while True:
            rows = rows_of(clean_db, ids)
            if len(rows) != last:
                last, stable_since = len(rows), time.monotonic()
            inflight = sum(int(client.hlen(k)) for k in client.scan_iter("embedclf:w:*:inflight"))
            held_now = client.llen("celery") + inflight
            if len(rows) == len(expected) or time.monotonic() > deadline or (
                    not held_now and time.monotonic() - stable_since > 3 * HEARTBEAT_TTL_S):
                break
            assert any(w.alive() for w in workers)
            time.sleep(1)
        t_done = time.monotonic()

        lost = sorted(expected - set(rows))
        dupes = {k: v for k, v in rows.items() if len(v) > 1}
        logs = "".join(w.log() for w in workers)
        reaped = re.findall(r"worker (\S+) is gone \(heartbeat expired\): returned its (\d+) message\(s\) to the "
                            r"queue \((\d+) charged", logs)
        reaped_wids = [wid for wid, _, _ in reaped]
        live_wids = {k.decode() for k in client.hkeys(REGISTRY)}
        waited = logs.count("database (write) unavailable") + logs.count("database (head refresh) unavailable")
        n_bad = sum(st == "error" for st in status.values())
        print(f"\nfaults: {len(expected)} texts enqueued ({n_single} single-text tasks; {n_bad} invalid texts; "
              f"{N_MULTI_TASKS} tasks of {PER_MULTI} texts; {OUTAGE_TASKS} during the outage), rows {len(rows)}, "
              f"lost {len(lost)}, duplicated {len(dupes)}; {len(killed)} kills mid-batch ({len(killed_ids)} tasks "
              f"open, {len(uncommitted)} before their INSERT); {len(reaped)} dead workers reaped, "
              f"{sum(int(n) for _, n, _ in reaped)} messages returned ({sum(int(c) for _, _, c in reaped)} charged); "
              f"{held} messages held through the outage, {waited} outage log lines; Redis down {redis_down:.1f}s; "
              f"Postgres outage {outage:.1f}s; flow {t_done - t_flow:.0f}s, wall {t_done - t_start:.0f}s")

        assert lost == [], f"lost {len(lost)}: {lost[:20]}"
        assert dupes == {}
        for key, statuses in rows.items():
            assert statuses == [status[key]], (key, statuses)
        # each killed worker was reaped once, and never a live one
        assert len(reaped_wids) == len(set(reaped_wids)) == len(killed)
        assert not set(reaped_wids) & live_wids
        assert uncommitted and client.hlen(DEATHS) == 0  # charged messages finished: counts forgotten
        assert held > 0 and waited > 0 and outage >= OUTAGE_S  # the outage met work, and it was held
        assert "gave up after" not in logs
    finally:
        if producer is not None and producer.poll() is None:
            producer.kill()
        proxy.stop()
        redis_server.stop()

