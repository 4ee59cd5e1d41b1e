"""Producers get their answers back: Celery results, link/link_error callbacks, and Client handles."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import redis
from celery import Celery, signature

from embedclf.client import Client
from embedclf.errors import ClassificationError
from tests.conftest import settings_env
from tests.helpers import tiny_head

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

ENTRY_KEYS = {"status", "label", "score", "top3", "labels", "abstained", "head_name", "head_version", "item",
              "request_id", "error"}


@pytest.fixture
def backend_worker(settings, clean_db, start_worker):
    tiny_head(clean_db)
    tiny_head(clean_db, "other")
    redis.Redis.from_url(settings.broker_url).delete(settings.queue)
    w = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32", EMBEDCLF_RESULT_BACKEND=settings.broker_url,
                                  EMBEDCLF_RESULT_EXPIRES_S="600", EMBEDCLF_BATCH_MAX_WAIT_MS="20"), name="w-results")
    w.wait_ready()
    return w


def test_send_task_get_returns_the_result_and_raises_for_a_failed_task(settings, backend_worker):
    app = Celery(broker=settings.broker_url, backend=settings.broker_url, set_as_current=False)
    app.conf.update(result_accept_content=["json"], accept_content=["json"])
    one = app.send_task("embedclf.classify", kwargs={"head": "tiny", "text": "hello there", "request_id": "r1"})
    many = app.send_task("embedclf.classify", kwargs={"heads": ["tiny", "other"], "texts": ["a b", "", "c d"]})
    bad = app.send_task("embedclf.classify", kwargs={"head": "tiny", "text": ""})
    nohead = app.send_task("embedclf.classify", kwargs={"head": "nope", "text": "x"})

    r = one.get(timeout=60)
    assert set(r) == ENTRY_KEYS and r["status"] == "ok" and r["label"] in ("x", "y") and r["request_id"] == "r1"
    assert r["head_name"] == "tiny" and r["head_version"] == 1 and len(r["top3"]) == 2 and r["item"] == 0
    assert r["abstained"] is False and r["score"] == pytest.approx(r["top3"][0]["score"], abs=1e-6)

    got = many.get(timeout=60)  # (item, head) order; the empty text is one error for every head
    assert [(e["item"], e["head_name"], e["status"]) for e in got] == [
        (0, "other", "ok"), (0, "tiny", "ok"), (1, None, "error"), (2, "other", "ok"), (2, "tiny", "ok")]
    assert got[2]["error"] == "'texts[1]' is empty"

    with pytest.raises(ClassificationError, match="'text' is empty"):
        bad.get(timeout=60)
    assert bad.state == "FAILURE" and isinstance(bad.get(propagate=False), ClassificationError)
    with pytest.raises(ClassificationError, match="unknown head 'nope'"):
        nohead.get(timeout=60)
    app.close()


def test_link_and_link_error_reach_a_task_of_another_app(settings, backend_worker, tmp_path):
    r = redis.Redis.from_url(settings.broker_url)
    r.delete("linkapp:calls", "linkapp")
    env = {**settings_env(settings), "LINK_BROKER": settings.broker_url}
    other = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tests.worker.linkapp", "worker", "--pool", "solo",
                              "-Q", "linkapp", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                             env=env, stdout=(tmp_path / "linkapp.log").open("w"), stderr=subprocess.STDOUT)
    try:
        producer = Celery(broker=settings.broker_url, set_as_current=False)  # no result backend needed for links
        producer.send_task("embedclf.classify", kwargs={"head": "tiny", "text": "linked"}, task_id="linked-ok",
                           link=signature("linkapp.on_result", queue="linkapp"),
                           link_error=signature("linkapp.on_error", queue="linkapp"))
        producer.send_task("embedclf.classify", kwargs={"head": "tiny", "text": ""}, task_id="linked-bad",
                           link=signature("linkapp.on_result", queue="linkapp"),
                           link_error=signature("linkapp.on_error", queue="linkapp"))
        deadline = time.monotonic() + 60
        while r.llen("linkapp:calls") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        calls = [json.loads(c) for c in r.lrange("linkapp:calls", 0, -1)]
        producer.close()
    finally:
        other.terminate()
        other.wait(timeout=30)
    assert len(calls) == 2, (tmp_path / "linkapp.log").read_text()[-2000:]
    ok = next(c for c in calls if c["task"] == "on_result")
    assert ok["result"]["status"] == "ok" and ok["result"]["head_name"] == "tiny"
    assert {"task": "on_error", "task_id": "linked-bad"} in calls


@pytest.mark.parametrize("through", ["backend", "postgres"])
def test_client_handles_wait_for_results(settings, backend_worker, through):
    kw = {"result_backend": settings.broker_url} if through == "backend" else {"database_url": settings.database_url}
    client = Client(settings.broker_url, settings.queue, **kw)
    try:
        h = client.classify("tiny", "hello")
        entry = h.get(timeout=60)
        assert entry["status"] == "ok" and entry["head_name"] == "tiny"
        handles = client.classify_many(["tiny", "other"], ["one", "", "three"], request_ids=["a", "b", "c"])
        results = client.wait(handles, timeout=60)
        assert [sorted(e["head_name"] for e in r) for r in (results[0], results[2])] == [["other", "tiny"]] * 2
        assert results[1]["status"] == "error" and results[1]["request_id"] == "b"  # one error for both heads
        assert handles[2].get(timeout=5) == results[2]
        with pytest.raises(ClassificationError, match="'text' is empty"):
            client.classify("tiny", " ").get(timeout=60)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            client.get("never-sent", timeout=1)
        assert time.monotonic() - t0 < 10
    finally:
        client.close()
