"""End to end on real parts: producer process -> Redis -> Celery worker -> MiniLM -> head -> Postgres."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from embedclf.data import load_labeled
from embedclf.demo import HOLDOUT_CSV, TRAIN_CSV
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.store import repository as repo
from embedclf.training.trainer import TrainParams, train_head
from tests.conftest import settings_env
from tests.helpers import produce, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

PICKLE_PRODUCER = r"""
import os, sys
from celery import Celery
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
app = Celery(broker=sys.argv[1])
app.send_task("embedclf.classify", kwargs={"head": "support", "text": Evil()}, task_id=sys.argv[3],
              serializer="pickle")
"""


@pytest.fixture(scope="module")
def support_head(engine, minilm):
    train = load_labeled(TRAIN_CSV)
    result = train_head(minilm.embed(train.texts), train.labels, TrainParams(epochs=40))
    art = HeadArtifact.from_head(result.head, result.labels, minilm.model_id)
    with engine.begin() as conn:
        from sqlalchemy import text
        conn.execute(text("TRUNCATE predictions, head_events, heads RESTART IDENTITY"))
    repo.add_head_version(engine, "support", art)
    return result


def test_pipeline_end_to_end(settings, engine, support_head, minilm, start_worker, tmp_path):
    labels = set(support_head.labels)
    holdout = load_labeled(HOLDOUT_CSV)
    train = load_labeled(TRAIN_CSV)
    valid: list[dict] = []
    for i, (text, label) in enumerate(zip(holdout.texts, holdout.labels)):
        valid.append({"id": f"hold-{i}", "kwargs": {"head": "support", "text": text, "request_id": f"req-{i}"},
                      "label": label})
    # more traffic: training texts and repeats (the same text in one batch is embedded once)
    for i, text in enumerate(train.texts + holdout.texts + holdout.texts[:40]):
        valid.append({"id": f"bulk-{i}", "kwargs": {"head": "support", "text": text}})
    assert len(valid) >= 500

    huge = "word " * (2 * 1024 * 1024)  # 10 MB
    invalid = [
        ("empty", {"head": "support", "text": ""}, "'text' is empty"),
        ("blank", {"head": "support", "text": "  \n\t "}, "'text' is empty"),
        ("number", {"head": "support", "text": 123}, "'text' must be a string"),
        ("list", {"head": "support", "text": ["a", "b"]}, "'text' must be a string"),
        ("nohead", {"head": "no-such-head", "text": "where is my parcel"}, "unknown head 'no-such-head'"),
        ("nul", {"head": "support", "text": "refund\x00please"}, "NUL byte"),
        # 10 MB of text, 14 MB on the wire: refused before it is decoded (Redis hands the worker only its size)
        ("huge", {"head": "support", "text": huge}, "(max 1048576, EMBEDCLF_MAX_PAYLOAD_BYTES); not decoded"),
        ("long", {"head": "support", "text": "w" * 20_001}, "too long"),  # under the payload limit
        ("missing", {"head": "support"}, "missing required field(s): text"),
        ("extra", {"head": "support", "text": "hi", "colour": "red"}, "unexpected field(s): colour"),
        ("headtype", {"head": None, "text": "hi"}, "'head' must be a non-empty string"),
    ]
    bad = [{"id": f"bad-{name}", "kwargs": kw} for name, kw, _ in invalid]
    bad.append({"id": "bad-args", "kwargs": {}, "opts": {"args": ["support", "hello"]}})
    # interleave bad tasks with good ones so they share batches
    tasks = valid[:200] + bad + valid[200:]

    worker = start_worker(settings_env(settings, EMBEDCLF_BATCH_MAX_SIZE="32", EMBEDCLF_BATCH_MAX_WAIT_MS="50"))
    worker.wait_ready()
    t0 = time.monotonic()
    produce(settings.broker_url, tasks, tmp_path)
    ids = [t["id"] for t in tasks]
    rows = wait_rows(engine, ids, worker)
    elapsed = time.monotonic() - t0

    # exactly one row per task, nothing else
    assert set(rows) == set(ids)
    all_rows = repo.query_predictions(engine, limit=None)
    assert len(all_rows) == len({r["task_id"] for r in all_rows})

    for t in valid:
        r = rows[t["id"]]
        assert r["status"] == "ok", r
        assert r["head_name"] == "support" and r["head_version"] == 1
        assert r["embedder_id"] == "st:all-MiniLM-L6-v2"
        top3 = r["top3"]
        assert len(top3) == 3 and len({x["label"] for x in top3}) == 3
        assert all(x["label"] in labels for x in top3)
        scores = [x["score"] for x in top3]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
        assert r["label"] == top3[0]["label"] and r["score"] == pytest.approx(scores[0], abs=1e-6)
        assert r["text"] == t["kwargs"]["text"]
        assert r["completed_at"] >= r["received_at"]
    assert rows["hold-3"]["request_id"] == "req-3"

    # the worker's batched answer equals the offline pipeline's, text by text
    offline = support_head.head.predict_proba(minilm.embed(holdout.texts))
    for i, p in enumerate(offline):
        r = rows[f"hold-{i}"]
        assert r["label"] == support_head.labels[int(p.argmax())]
        assert r["score"] == pytest.approx(float(p.max()), abs=1e-4)

    correct = sum(rows[t["id"]]["label"] == t["label"] for t in valid if "label" in t)
    accuracy = correct / len(holdout.texts)
    assert accuracy >= 0.90, f"held-out accuracy {accuracy:.3f}"  # measured 0.944

    for name, _, expected in invalid:
        r = rows[f"bad-{name}"]
        assert r["status"] == "error" and expected in r["error"], (name, r["error"])
        assert r["label"] is None and r["top3"] is None
    assert "positional arguments" in rows["bad-args"]["error"]
    assert rows["bad-nohead"]["head_name"] == "no-such-head"

    # the worker is still alive and keeps serving
    assert worker.alive()
    produce(settings.broker_url, [{"id": "after", "kwargs": {"head": "support", "text": "I was charged twice"}}],
            tmp_path)
    after = wait_rows(engine, ["after"], worker)["after"]
    assert after["status"] == "ok" and after["label"] == "billing"
    # batching really happened: fewer distinct completion instants than tasks
    batches = {r["completed_at"] for r in rows.values()}
    assert len(batches) < len(rows) / 4, f"{len(batches)} batches for {len(rows)} tasks"
    print(f"\ne2e: {len(tasks)} tasks in {elapsed:.1f}s ({len(tasks) / elapsed:.0f} tasks/s incl. 10 MB text), "
          f"{len(batches)} batches, held-out accuracy {accuracy:.3f}")


def test_pickle_message_is_rejected_and_not_executed(settings, engine, support_head, start_worker, tmp_path):
    marker = tmp_path / "pwned"
    worker = start_worker(settings_env(settings), name="w-pickle")
    worker.wait_ready()
    out = subprocess.run([sys.executable, "-c", PICKLE_PRODUCER, settings.broker_url, str(marker), "pickled-1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    produce(settings.broker_url, [{"id": "after-pickle", "kwargs": {"head": "support", "text": "refund please"}}],
            tmp_path)
    rows = wait_rows(engine, ["pickled-1", "after-pickle"], worker)
    assert rows["pickled-1"]["status"] == "error"
    assert "refused, not deserialised (JSON only)" in rows["pickled-1"]["error"]
    assert rows["after-pickle"]["status"] == "ok"
    assert not marker.exists()
