"""HeadCache against a real Postgres: refresh, early refresh for unknown names, cached heads during an outage."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.exc import OperationalError

from embedclf.embedders.fake import FakeEmbedder
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.store import repository as repo
from embedclf.training.trainer import TrainParams, train_head
from worker.resources import HeadCache

pytestmark = pytest.mark.postgres

TEXTS = {
    "fruit": ["apple banana", "ripe mango", "banana split", "fresh apple", "mango smoothie", "pear and apple"],
    "cars": ["fast car engine", "car tyres", "engine oil change", "new car brakes", "tyres and brakes",
             "diesel engine"],
}


def store_head(engine, emb: FakeEmbedder, name: str = "topics", epochs: int = 30,
               embedder_id: str | None = None) -> int:
    texts = [t for ts in TEXTS.values() for t in ts] * 20
    labels = [lbl for lbl, ts in TEXTS.items() for _ in ts] * 20
    result = train_head(emb.embed(texts), labels, TrainParams(epochs=epochs, hidden_dim=32, patience=epochs))
    art = HeadArtifact.from_head(result.head, result.labels, embedder_id or emb.model_id)
    return repo.add_head_version(engine, name, art)


def test_head_cache_picks_up_new_versions(clean_db):
    emb = FakeEmbedder(32)
    store_head(clean_db, emb, epochs=2)
    now = [0.0]
    cache = HeadCache(clean_db, refresh_s=5.0, clock=lambda: now[0])
    assert cache.snapshot()["topics"].version == 1
    store_head(clean_db, emb, epochs=2)  # v2 becomes active
    now[0] = 2.0
    assert cache.snapshot()["topics"].version == 1  # not stale yet
    assert cache.age_s() == 2.0  # read at 0.0
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
        assert cache.age_s() == 10.0  # a failed refresh is not a read: readiness shows the heads' true age
        empty = HeadCache(dead, refresh_s=2.0, clock=lambda: now[0])
        with pytest.raises(OperationalError):  # nothing cached: the batch goes back to the queue
            empty.snapshot()
    finally:
        dead.dispose()
    cache.engine = clean_db  # back: the next refresh sees new versions again
    store_head(clean_db, emb, epochs=2)
    now[0] = 12.5
    assert cache.snapshot()["topics"].version == 2


def test_a_background_cache_serves_its_heads_while_a_refresh_loads_a_new_version(clean_db, monkeypatch):
    """With a refresher (``background``), the batch thread's snapshot never waits for a refresh: while one
    loads a new version (held here inside ``load_head``), the old version is served at once; then the new."""
    import threading
    import time

    emb = FakeEmbedder(32)
    store_head(clean_db, emb, epochs=2)
    cache = HeadCache(clean_db, refresh_s=60.0)
    assert cache.snapshot()["topics"].version == 1
    store_head(clean_db, emb, epochs=2)  # v2 becomes active
    entered, release = threading.Event(), threading.Event()
    load = repo.load_head

    def slow_load(*args, **kwargs):
        entered.set()
        assert release.wait(30)
        return load(*args, **kwargs)

    monkeypatch.setattr(repo, "load_head", slow_load)
    cache.background = True
    refresh = threading.Thread(target=cache.refresh_now)
    refresh.start()
    try:
        assert entered.wait(10)
        t0 = time.monotonic()
        snap = cache.snapshot(wanted={"topics"})
        assert time.monotonic() - t0 < 5.0 and snap["topics"].version == 1
        assert cache.cached()["topics"].version == 1
    finally:
        release.set()
        refresh.join(30)
    assert cache.snapshot()["topics"].version == 2


def test_a_background_cache_refreshes_itself_once_the_refresher_has_stopped(clean_db):
    """``background`` set but no refresh for ``BACKGROUND_STALE_FACTOR`` intervals (a stuck refresher): the
    snapshot polls again itself, so a new version is never missed for longer than that."""
    from worker.resources import BACKGROUND_STALE_FACTOR

    emb = FakeEmbedder(32)
    store_head(clean_db, emb, epochs=2)
    now = [0.0]
    cache = HeadCache(clean_db, refresh_s=2.0, clock=lambda: now[0])
    cache.background = True
    assert cache.snapshot()["topics"].version == 1  # nothing loaded yet: polls
    store_head(clean_db, emb, epochs=2)
    now[0] = 2.0 * BACKGROUND_STALE_FACTOR - 0.5
    assert cache.snapshot()["topics"].version == 1  # the refresher's job, not this thread's
    now[0] = 2.0 * BACKGROUND_STALE_FACTOR + 0.5
    assert cache.snapshot()["topics"].version == 2

