"""Between two batches the model waits for the batch thread's own Python (the next plan, its busy mark): the
previous batch's heads and the receiver's next messages are handed out once the model starts, not before.

In-process worker on real Redis and Postgres, a fake embedder that signals its model's start as the ONNX one
does (:func:`embedclf.embedders.base.model_starting`).
"""

from __future__ import annotations

import threading
import time

import pytest

from embedclf.client import Client
from embedclf.embedders.base import model_starting
from embedclf.embedders.fake import FakeEmbedder
from tests.training.textdata import make_texts
from tests.worker.test_pipeline import count, make_service, wait_for
from tests.worker.test_text_thread import _hybrid, all_ok
from worker.inflight import Inflight

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


class Signalling(FakeEmbedder):
    """Records ``("model", k)`` for the k-th batch holding a ``watch`` text, just before its model starts."""

    signals_model_start = True

    def __init__(self, watch: set[str], events: list) -> None:
        super().__init__(32)
        self.watch, self.events, self.batches = watch, events, 0
        self.fail_next = 0  # transient failures before the model starts
        self.failing = threading.Event()

    def embed_batch(self, texts):
        if self.watch & set(texts):
            if self.fail_next:
                self.fail_next -= 1
                self.failing.set()
                raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
            self.batches += 1
            self.events.append(("model", self.batches))
            model_starting()
            time.sleep(0.2)  # the model's time: the receiver has the next messages in the buffer by the end
        else:
            model_starting()
        return super().embed_batch(texts)


def _service(clean_db, pg_url, redis_url, queue, services, texts, events):
    emb = Signalling(set(texts), events)
    s = make_service(pg_url, redis_url, queue, embedder=emb)
    services.append(s)
    head = s.res.heads.snapshot()["hybrid"].module
    original = head.predict_proba

    def recording(x, *args, **kwargs):
        if "sparse" in kwargs:  # a batch's heads (the warm-up computes its own logits)
            events.append(("heads", len(x)))
        return original(x, *args, **kwargs)

    head.predict_proba = recording
    return s, emb


def test_a_batch_s_heads_start_once_the_next_batch_s_model_has_started(clean_db, pg_url, redis_url, queue,
                                                                        services, monkeypatch):
    _hybrid(clean_db)
    texts = make_texts(4, seed=35)[0][:24]
    events: list = []
    s, _ = _service(clean_db, pg_url, redis_url, queue, services, texts, events)
    mark = Inflight.mark_busy

    def slow_mark(self, tags):  # the batch thread's Python between two batches, made long: heads handed
        time.sleep(0.15)  # out before the next model's start would run (and be recorded) in it
        return mark(self, tags)

    monkeypatch.setattr(Inflight, "mark_busy", slow_mark)
    client = Client(redis_url, queue)
    client.classify_many("hybrid", texts, per_task=8)  # queued first: three batches of 8, each due at once
    client.close()
    s.start()
    assert all_ok(clean_db, len(texts))
    assert 16 < len(texts) <= 24
    assert events == [("model", 1), ("model", 2), ("heads", 8), ("model", 3), ("heads", 8), ("heads", len(texts) - 16)]


def test_a_held_batch_s_heads_run_while_the_next_batch_waits_for_its_embedder(clean_db, pg_url, redis_url, queue,
                                                                               services):
    """The second batch's embedder fails (a transient error, before its model starts) and is retried after a
    back-off: the first batch's rows are written meanwhile, not held until the model comes back."""
    _hybrid(clean_db)
    texts = make_texts(4, seed=36)[0][:16]
    events: list = []
    s, emb = _service(clean_db, pg_url, redis_url, queue, services, texts, events)
    first_done = threading.Event()
    original = s.res.embedder.embed_batch

    def gated(batch):
        if set(batch) & set(texts[8:]) and not first_done.is_set():
            emb.fail_next = 1  # fails until the first batch's rows are in Postgres
        return original(batch)

    emb.embed_batch = gated
    client = Client(redis_url, queue)
    client.classify_many("hybrid", texts, per_task=8)
    client.close()
    s.start()
    wait_for(lambda: count(clean_db) >= 8, timeout=20, what="the first batch's rows during the back-off")
    assert emb.failing.is_set() and count(clean_db) == 8
    first_done.set()
    assert all_ok(clean_db, len(texts))
