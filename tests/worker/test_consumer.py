"""The consuming thread keeps receiving while the runner thread works on a batch."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

import worker.batching as batching
from tests.worker.test_attempts import RecordedMessage, consumer, rows, settle  # noqa: F401 (fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_messages_are_received_while_a_batch_runs_and_form_the_next_batch(consumer, clean_db, monkeypatch):
    real = batching.process_batch
    gate = threading.Event()
    running = threading.Event()
    sizes: list[int] = []

    def slow(items, res):
        sizes.append(len(items))
        running.set()
        gate.wait(30)
        return real(items, res)

    monkeypatch.setattr(batching, "process_batch", slow)
    first = [RecordedMessage(f"a-{uuid.uuid4()}", {"head": "h", "text": f"first {i}"}) for i in range(3)]
    later = [RecordedMessage(f"b-{uuid.uuid4()}", {"head": "h", "text": f"later {i}"}) for i in range(2)]
    for m in first:
        consumer.on_message(m, None, None, None, None)
    consumer.flush()
    assert running.wait(30) and consumer._busy
    for m in later:  # arrive while the first batch is still embedding
        consumer.on_message(m, None, None, None, None)
    time.sleep(0.2)  # well past the 50 ms max wait: due, yet not started beside the running batch
    assert consumer.batcher.due() and len(consumer.batcher) == 2 and sizes == [3]
    assert all(m.outcome == [] for m in first + later)  # nothing acked before its row exists
    gate.set()
    deadline = time.monotonic() + 30
    while len(sizes) < 2 and time.monotonic() < deadline:  # settling batch 1 starts batch 2 at once
        consumer.runner.drain()
        time.sleep(0.005)
    settle(consumer)
    assert sizes == [3, 2]
    assert all(m.outcome == ["ack"] for m in first + later)
    assert all(r["status"] == "ok" for r in rows(clean_db, first + later).values())
    assert len(rows(clean_db, first + later)) == 5
