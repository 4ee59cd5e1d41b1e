"""process_batch and HeadCache with the fake embedder against a real Postgres."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy.exc import OperationalError

from embedclf.config import Settings
from embedclf.embedders.fake import FakeEmbedder
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.payload import ClassifyRequest
from embedclf.store import repository as repo
from embedclf.training.trainer import TrainParams, train_head
from worker.batching import Pending, process_batch
from worker.resources import HeadCache, WorkerResources

pytestmark = pytest.mark.postgres

TEXTS = {
    "fruit": ["apple banana", "ripe mango", "banana split", "fresh apple", "mango smoothie", "pear and apple"],
    "cars": ["fast car engine", "car tyres", "engine oil change", "new car brakes", "tyres and brakes", "diesel engine"],
}


def store_head(engine, emb: FakeEmbedder, name: str = "topics", epochs: int = 30, embedder_id: str | None = None) -> int:
    texts = [t for ts in TEXTS.values() for t in ts] * 20
    labels = [lbl for lbl, ts in TEXTS.items() for _ in ts] * 20
    result = train_head(emb.embed(texts), labels, TrainParams(epochs=epochs, hidden_dim=32, patience=epochs))
    art = HeadArtifact.from_head(result.head, result.labels, embedder_id or emb.model_id)
    return repo.add_head_version(engine, name, art)


def pending(task_id: str, head: str, text: str) -> Pending:
    now = dt.datetime.now(dt.timezone.utc)
    return Pending(None, now, request=ClassifyRequest(task_id, head, text, request_id=f"r-{task_id}"))


@pytest.fixture
def resources(clean_db, pg_url):
    res = WorkerResources(Settings(database_url=pg_url, head_refresh_s=60), embedder=FakeEmbedder(32))
    yield res
    res.close()


def test_batch_writes_one_row_per_task(resources, clean_db):
    store_head(clean_db, resources.embedder)
    batch = [pending("t1", "topics", "apple and mango"), pending("t2", "topics", "car engine"),
             pending("t3", "nope", "apple"), pending("t1", "topics", "apple and mango")]
    bad = Pending(None, dt.datetime.now(dt.timezone.utc), error={"task_id": "t4", "status": "error", "error": "bad"})
    assert process_batch(batch + [bad], resources) == 4
    rows = {r["task_id"]: r for r in repo.query_predictions(clean_db, limit=None)}
    assert set(rows) == {"t1", "t2", "t3", "t4"}
    assert rows["t1"]["label"] == "fruit" and rows["t2"]["label"] == "cars"
    assert rows["t1"]["head_version"] == 1 and rows["t1"]["request_id"] == "r-t1"
    assert rows["t3"]["status"] == "error" and "unknown head 'nope'" in rows["t3"]["error"]
    assert rows["t4"]["error"] == "bad"
    assert all(r["worker"] == resources.hostname and r["received_at"] is not None for r in rows.values())
    # re-processing the same batch (a redelivery) inserts nothing new
    assert process_batch(batch, resources) == 0


def test_head_on_other_embedder_is_refused(resources, clean_db):
    store_head(clean_db, resources.embedder, name="alien", embedder_id="st:all-MiniLM-L6-v2")
    process_batch([pending("x1", "alien", "apple")], resources)
    (row,) = repo.query_predictions(clean_db)
    assert row["status"] == "error"
    assert "'st:all-MiniLM-L6-v2'" in row["error"] and "'fake:32'" in row["error"]


def test_head_cache_picks_up_new_versions(clean_db):
    emb = FakeEmbedder(32)
    store_head(clean_db, emb, epochs=2)
    now = [0.0]
    cache = HeadCache(clean_db, refresh_s=5.0, clock=lambda: now[0])
    assert cache.snapshot()["topics"].version == 1
    store_head(clean_db, emb, epochs=2)  # v2 becomes active
    now[0] = 2.0
    assert cache.snapshot()["topics"].version == 1  # not stale yet
    now[0] = 5.5
    snap = cache.snapshot()
    assert snap["topics"].version == 2
    x = emb.embed(["apple"])
    assert np.isclose(snap["topics"].module.predict_proba(x).sum(), 1.0)


def test_head_cache_refreshes_early_for_unknown_names(clean_db):
    emb = FakeEmbedder(32)
    now = [0.0]
    cache = HeadCache(clean_db, refresh_s=60.0, clock=lambda: now[0])
    assert cache.snapshot() == {}
    store_head(clean_db, emb, name="fresh", epochs=2)
    now[0] = 0.5
    assert "fresh" not in cache.snapshot(wanted={"fresh"})  # at most one refresh per second
    now[0] = 1.5
    assert "fresh" in cache.snapshot(wanted={"fresh"})


def test_head_cache_serves_cached_heads_while_postgres_is_unreachable(clean_db):
    from embedclf.store.db import make_engine

    emb = FakeEmbedder(32)
    store_head(clean_db, emb, epochs=2)
    now = [0.0]
    cache = HeadCache(clean_db, refresh_s=2.0, clock=lambda: now[0])
    assert cache.snapshot()["topics"].version == 1
    dead = make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere")
    try:
        cache.engine = dead  # the database goes away
        now[0] = 10.0
        assert cache.snapshot()["topics"].version == 1  # stale but served, no exception
        empty = HeadCache(dead, refresh_s=2.0, clock=lambda: now[0])
        with pytest.raises(OperationalError):  # nothing cached: the batch goes back to the queue
            empty.snapshot()
    finally:
        dead.dispose()
    cache.engine = clean_db  # back: the next refresh sees new versions again
    store_head(clean_db, emb, epochs=2)
    now[0] = 12.5
    assert cache.snapshot()["topics"].version == 2
