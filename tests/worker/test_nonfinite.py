"""A model that returns a NaN vector for a text, in a running worker on real Redis and Postgres: that text's
rows are error rows, the batch's other texts are served, and nothing is retried or charged."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import redis

from embedclf.classify import NONFINITE
from embedclf.client import Client
from embedclf.embedders.fake import FakeEmbedder
from embedclf.store import repository as repo
from tests.helpers import tiny_head
from tests.worker.test_pipeline import count, start, wait_for
from worker.inflight import DEATHS

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


class NanOn(FakeEmbedder):
    """NaN vectors for texts holding ``marker`` (a model that overflows on them)."""

    def __init__(self, marker: str) -> None:
        super().__init__(32)
        self.marker = marker

    def embed_batch(self, texts):
        out = super().embed_batch(texts)
        out[[i for i, t in enumerate(texts) if self.marker in t]] = np.nan
        return out


def test_a_nan_vector_is_an_error_row_and_the_rest_of_its_batch_is_served(clean_db, pg_url, redis_url, queue,
                                                                         services):
    tiny_head(clean_db)
    client = Client(redis_url, queue)
    texts = [f"text {i}" + (" overflow" if i % 4 == 1 else "") for i in range(12)]
    single = client.classify_many("tiny", texts, per_task=1)
    multi = client.classify_many("tiny", ["a overflow", "b", "c"], per_task=3)
    client.close()
    start(services, pg_url, redis_url, queue, embedder=NanOn("overflow"))
    wait_for(lambda: count(clean_db) == 15, what="15 rows")
    rows = {(r["task_id"], r["item"]): r
            for r in repo.query_predictions(clean_db, task_ids=[x.task_id for x in single + multi], limit=None)}
    for i, ref in enumerate(single):
        row = rows[(ref.task_id, 0)]
        if i % 4 == 1:
            assert (row["status"], row["error"], row["label"], row["top3"]) == ("error", NONFINITE, None, None)
        else:
            assert row["status"] == "ok" and row["label"] == row["top3"][0]["label"] and row["score"] is not None
    task = multi[0].task_id
    assert [rows[(task, k)]["status"] for k in range(3)] == ["error", "ok", "ok"]
    r = redis.Redis.from_url(redis_url)
    assert r.hlen(DEATHS) == 0  # nothing charged: the rows are the final answer
    wait_for(lambda: services[0].inflight.held() == 0, what="the batch acked")


def test_a_worker_whose_model_gives_nan_says_so_at_warm_up(clean_db, pg_url, redis_url, queue, services, caplog):
    caplog.set_level(logging.ERROR, logger="worker.pipeline")
    start(services, pg_url, redis_url, queue, embedder=NanOn(""))  # every text: a broken model
    wait_for(lambda: services[0].batches.warmed.is_set(), what="warm-up")
    assert any("warm-up" in m and "NaN" in m for m in caplog.messages)
