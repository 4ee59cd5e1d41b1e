"""A real worker process on the bulk receive path: hostile queue entries, multi-text tasks, Celery tooling.

Fake embedder (the model is not what these test); real Redis, Postgres, ``celery -A worker.app worker``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import zlib

import pytest
import redis

from embedclf.client import Client
from embedclf.envelope import raw_task_id
from embedclf.store import repository as repo
from tests.conftest import settings_env
from tests.helpers import produce, rows_by_key, tiny_head, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def envelope(body: bytes, headers: dict, properties: dict | None = None,
             content_type: str = "application/json") -> bytes:
    env = {"body": base64.b64encode(body).decode(), "content-encoding": "utf-8", "content-type": content_type,
           "headers": headers, "properties": properties or {"body_encoding": "base64"}}
    return json.dumps(env).encode()


def p2(kwargs: dict) -> bytes:
    return json.dumps([[], kwargs, {}]).encode()


@pytest.fixture
def worker(settings, clean_db, start_worker):
    tiny_head(clean_db)
    redis.Redis.from_url(settings.broker_url).delete(settings.queue)
    w = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32", EMBEDCLF_BATCH_MAX_WAIT_MS="20"),
                     name="w-bulk")
    w.wait_ready()
    return w


def test_every_hostile_entry_gets_exactly_one_row_and_the_worker_never_restarts(settings, clean_db, worker, tmp_path):
    r = redis.Redis.from_url(settings.broker_url)
    q = settings.queue
    hostile = {
        "non-json": b"definitely not json",
        "json-array": b"[1, 2, 3]",
        "bad-base64": envelope(b"", {"task": "embedclf.classify", "id": "bad-b64"}).replace(b'"body": ""',
                                                                                           b'"body": "!!!"'),
        "unknown-compression": envelope(zlib.compress(p2({"head": "tiny", "text": "x"})),
                                        {"task": "embedclf.classify", "id": "bad-comp",
                                         "compression": "application/x-snappy"}),
        "headers-list": json.dumps({"body": "", "headers": ["a"], "properties": {}}).encode(),
        "no-properties": json.dumps({"body": base64.b64encode(p2({"head": "tiny", "text": "x"})).decode(),
                                     "content-type": "application/json",
                                     "headers": {"task": "embedclf.classify", "id": "no-props"}}).encode(),
        "unknown-task": envelope(p2({}), {"task": "someone.elses.task", "id": "alien"}),
        "pickle": envelope(b"\x80\x04K\x01.", {"task": "embedclf.classify", "id": "pickled"},
                           content_type="application/x-python-serialize"),
        "lone-surrogate": envelope(p2({"head": "tiny", "text": "x"}), {"task": "embedclf.classify",
                                                                       "id": "sur"}).replace(b'"sur"',
                                                                                             b'"s\xed\xa0\x80r"'),
        "deep-nesting": envelope(b"[" * 100_000 + b"]" * 100_000, {"task": "embedclf.classify", "id": "deep"}),
        "zip-bomb": envelope(zlib.compress(b"[" + b" " * 50_000_000 + b"]"),
                             {"task": "embedclf.classify", "id": "bomb", "compression": "application/x-gzip"}),
        "protocol-1": envelope(json.dumps({"task": "embedclf.classify", "id": "p1", "args": [],
                                           "kwargs": {"head": "tiny", "text": "from another language"}}).encode(),
                               {}, {"body_encoding": "base64", "correlation_id": "p1"}),
        "id-too-long": envelope(p2({"head": "tiny", "text": "x"}), {"task": "embedclf.classify", "id": "L" * 300}),
    }
    pid = worker.pid
    client = Client(settings.broker_url, settings.queue)
    before = client.classify_many("tiny", ["valid before 1", "valid before 2"], per_task=1)
    r.lpush(q, *hostile.values())
    after = client.classify_many("tiny", ["valid after 1", "valid after 2"], per_task=1)
    client.close()
    ids = {name: (raw_task_id(raw) if name in ("non-json", "json-array", "headers-list", "lone-surrogate",
                                                "id-too-long") else None) for name, raw in hostile.items()}
    by_id = {"bad-base64": "bad-b64", "unknown-compression": "bad-comp", "no-properties": "no-props",
             "unknown-task": "alien", "pickle": "pickled", "deep-nesting": "deep", "zip-bomb": "bomb",
             "protocol-1": "p1"}
    ids.update(by_id)
    all_ids = list(ids.values()) + [x.task_id for x in before + after]
    rows = wait_rows(clean_db, all_ids, worker, timeout=60)
    time.sleep(0.5)
    assert len(repo.query_predictions(clean_db, limit=None)) == len(all_ids)  # one row each, nothing more
    expected_errors = {
        "non-json": "not valid JSON", "json-array": "not a JSON object", "bad-base64": "not valid base64",
        "unknown-compression": "unsupported compression", "headers-list": "'headers' must be an object",
        "no-properties": "no 'properties' object", "unknown-task": "unknown task 'someone.elses.task'",
        "pickle": "JSON only", "lone-surrogate": "invalid Unicode", "deep-nesting": "nested too deeply",
        "zip-bomb": "decompresses to more than", "id-too-long": "refused, not truncated",
    }
    for name, fragment in expected_errors.items():
        row = rows[ids[name]]
        assert row["status"] == "error" and fragment in row["error"], (name, row["error"])
    assert rows["p1"]["status"] == "ok" and rows["p1"]["text"] == "from another language"
    assert all(rows[x.task_id]["status"] == "ok" for x in before + after)
    # the same worker process did all of it: it never exited, looped or stalled
    assert worker.alive() and worker.pid == pid and worker.log().count(" ready.") == 1
    assert r.llen(q) == 0 and "Traceback" not in worker.log()


def test_multi_text_tasks_from_plain_celery_and_the_client(settings, clean_db, worker, tmp_path):
    produce(settings.broker_url, [
        {"id": "multi-a", "kwargs": {"head": "tiny", "texts": ["one", "", "three"], "request_ids": ["r0", "r1", 2]}},
        {"id": "multi-b", "kwargs": {"heads": ["tiny", "nope"], "texts": ["x", "y"]}},
        {"id": "multi-bad", "kwargs": {"head": "tiny", "texts": "not a list"}},
    ], tmp_path)
    client = Client(settings.broker_url, settings.queue)
    refs = client.classify_many("tiny", [f"text {i}" for i in range(700)], per_task=256)
    client.close()
    assert len({ref.task_id for ref in refs}) == 3
    ids = ["multi-a", "multi-b", "multi-bad"] + sorted({ref.task_id for ref in refs})
    deadline = time.monotonic() + 60
    while len(rows := rows_by_key(clean_db, ids)) < 3 + 4 + 1 + 700 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(rows) == 708
    assert [rows[("multi-a", i, "tiny")]["status"] for i in range(3)] == ["ok", "error", "ok"]
    assert [rows[("multi-a", i, "tiny")]["request_id"] for i in range(3)] == ["r0", "r1", "2"]
    assert rows[("multi-a", 1, "tiny")]["error"] == "'texts[1]' is empty"
    assert all(rows[("multi-b", i, "tiny")]["status"] == "ok" for i in range(2))
    assert all("unknown head 'nope'" in rows[("multi-b", i, "nope")]["error"] for i in range(2))
    whole = rows[("multi-bad", None, "tiny")]
    assert whole["status"] == "error" and "'texts' must be a list" in whole["error"]
    assert all(rows[(ref.task_id, ref.item, "tiny")]["text"] == f"text {i}" for i, ref in enumerate(refs))


def test_a_100_mb_message_never_enters_the_worker(settings, clean_db, worker):
    r = redis.Redis.from_url(settings.broker_url)
    client = Client(settings.broker_url, settings.queue)
    client.classify_many("tiny", ["warm up"], per_task=1)
    time.sleep(1)
    base = rss_mb(worker.pid)
    body = zlib.compress(os.urandom(76_000_000), 1)  # a 76 MB compressed body: 101 MB on the wire
    huge = envelope(body, {"task": "embedclf.classify", "id": "huge", "compression": "application/x-gzip"})
    del body
    assert len(huge) > 100_000_000
    r.lpush(settings.queue, huge)
    del huge
    [ref] = client.classify_many("tiny", ["behind the huge one"], per_task=1)
    client.close()
    rows = wait_rows(clean_db, ["huge", ref.task_id], worker, timeout=60)
    assert rows["huge"]["status"] == "error" and "(max 1048576, EMBEDCLF_MAX_PAYLOAD_BYTES); not decoded" in \
        rows["huge"]["error"]
    assert rows[ref.task_id]["status"] == "ok"
    grown = rss_mb(worker.pid) - base
    print(f"\nworker RSS {base:.0f} MB before a 101 MB message, +{grown:.1f} MB after")
    assert grown < 50


def test_celery_tooling_ping_and_task_events(settings, clean_db, start_worker, tmp_path):
    tiny_head(clean_db)
    env = settings_env(settings, EMBEDCLF_EMBEDDER="fake:32")
    w = start_worker(env, "w-events", "-E")  # task events on, as with stock Celery
    w.wait_ready()
    ping = subprocess.run([sys.executable, "-m", "celery", "-A", "worker.app", "inspect", "ping", "-t", "5"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path.parent))
    assert ping.returncode == 0 and "w-events@" in ping.stdout and "pong" in ping.stdout, ping.stdout + ping.stderr
    dump = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.app", "events", "--dump"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(dump.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30  # the dump is subscribed once it shows the worker's heartbeat
        while not any("w-events@" in ln and "heartbeat" in ln for ln in out) and time.monotonic() < deadline:
            time.sleep(0.1)
        produce(settings.broker_url, [{"id": "ev-ok", "kwargs": {"head": "tiny", "text": "hello"}},
                                      {"id": "ev-bad", "kwargs": {"head": "tiny", "text": ""}}], tmp_path)
        wait_rows(clean_db, ["ev-ok", "ev-bad"], w, timeout=60)
        deadline = time.monotonic() + 10
        while sum("task failed" in ln or "task succeeded" in ln for ln in out) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        dump.terminate()
        dump.wait(timeout=30)
        reader.join(5)
    lines = [ln for ln in out if "ev-ok" in ln or "ev-bad" in ln]
    joined = "\n".join(lines)
    for kind in ("task received", "task started", "task succeeded"):
        assert any(kind in ln and "ev-ok" in ln for ln in lines), (kind, joined or "".join(out)[-3000:])
    assert any("task failed" in ln and "ev-bad" in ln and "'text' is empty" in ln for ln in lines), joined
    assert "hello" not in joined  # events carry a summary of the kwargs, never the text
