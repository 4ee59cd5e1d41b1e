"""The batch thread runs the model once before its first batch, and a failing warm-up stops nothing."""

from __future__ import annotations

import threading

import numpy as np

from embedclf.client import Client
from embedclf.embedders.fake import FakeEmbedder
from tests.helpers import tiny_head
from tests.worker.test_pipeline import count, make_service, wait_for
from worker.pipeline import WARM_UP_TEXTS


class Recording(FakeEmbedder):
    """Records the thread of each call; optionally fails the first one."""

    def __init__(self, fail_first: bool = False) -> None:
        super().__init__(32)
        self.threads: list[str] = []
        self.fail_first = fail_first

    def embed_batch(self, texts):
        self.threads.append(threading.current_thread().name)
        if self.fail_first and len(self.threads) == 1:
            raise RuntimeError("model not ready")
        return super().embed_batch(texts)


def test_the_batch_thread_warms_up_the_model_and_its_heads_before_start_returns(clean_db, pg_url, redis_url, queue,
                                                                               services):
    tiny_head(clean_db)
    emb = Recording()
    s = make_service(pg_url, redis_url, queue, embedder=emb)
    seen = []
    head = s.res.heads.snapshot()["tiny"]
    original = head.module.predict_proba
    head.module.predict_proba = lambda x, texts=None: seen.append(np.asarray(x).shape) or original(x, texts)
    services.append(s)
    s.start()
    assert s.batches.warmed.is_set()  # start() returned after the warm-up
    assert emb.calls == [len(WARM_UP_TEXTS)] and emb.threads == ["embedclf-batch"]
    assert seen == [(len(WARM_UP_TEXTS), 32)]
    assert count(clean_db) == 0  # nothing written for it
    client = Client(redis_url, queue)
    client.classify_many("tiny", ["a real text"], per_task=1)
    client.close()
    wait_for(lambda: count(clean_db) == 1, what="the real task's row")


def test_a_failed_warm_up_is_logged_and_the_worker_serves(clean_db, pg_url, redis_url, queue, services, caplog):
    tiny_head(clean_db)
    s = make_service(pg_url, redis_url, queue, embedder=Recording(fail_first=True))
    services.append(s)
    s.start()
    assert "warm-up failed (RuntimeError: model not ready)" in caplog.text
    client = Client(redis_url, queue)
    client.classify_many("tiny", ["served anyway"], per_task=1)
    client.close()
    wait_for(lambda: count(clean_db) == 1, what="a row")
