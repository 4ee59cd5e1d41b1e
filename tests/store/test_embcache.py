"""The Postgres embedding cache: bulk get/put, and the caching embedder (fake and real MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from embedclf.embedders.fake import FakeEmbedder
from embedclf.store import embcache
from embedclf.store.datasets import text_sha256

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(engine):
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE embedding_cache"))
    return engine


class CountingEmbedder(FakeEmbedder):
    """The fake embedder, counting the texts it is asked to embed."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.seen: list[str] = []

    def embed_batch(self, texts):
        self.seen += list(texts)
        return super().embed_batch(texts)


def test_put_get_round_trip_exact_bytes(db):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2500, 16)).astype(np.float32)  # > one chunk each way
    keys = [text_sha256(f"text {i}") for i in range(len(X))]
    assert embcache.put_many(db, "e1", keys, X) == 2500
    assert embcache.put_many(db, "e1", keys[:10], X[:10] + 1) == 0  # existing keys are kept
    got = embcache.get_many(db, "e1", keys + [text_sha256("absent")])
    assert len(got) == 2500
    np.testing.assert_array_equal(np.stack([got[k] for k in keys]), X)
    assert embcache.get_many(db, "e2", keys[:5]) == {}  # keyed by embedder id
    assert embcache.get_many(db, "e1", keys[:5], dim=32) == {}  # a different size is not this model's
    assert embcache.count(db, "e1") == 2500 and embcache.clear(db, "e1") == 2500
    with pytest.raises(ValueError, match="expected"):
        embcache.put_many(db, "e1", keys[:2], X[:3])


def test_cached_embedder_embeds_only_unseen_texts(db):
    inner = CountingEmbedder(32)
    emb = embcache.CachedEmbedder(inner, db)
    texts = ["alpha", "beta", "alpha", "gamma"]
    ticks: list[int] = []
    X1 = emb.embed(texts, ticks.append)
    assert sorted(inner.seen) == ["alpha", "beta", "gamma"]  # a repeated text once
    assert (emb.hits, emb.embedded) == (0, 3) and sum(ticks) == 4  # progress counts every row
    np.testing.assert_array_equal(X1, FakeEmbedder(32).embed(texts))
    # a new object (new process): only the new text is embedded, the rest comes from Postgres
    inner2 = CountingEmbedder(32)
    emb2 = embcache.CachedEmbedder(inner2, db)
    ticks.clear()
    X2 = emb2.embed(["gamma", "delta", "alpha"], ticks.append)
    assert inner2.seen == ["delta"] and (emb2.hits, emb2.embedded) == (2, 1) and sum(ticks) == 3
    np.testing.assert_array_equal(X2, FakeEmbedder(32).embed(["gamma", "delta", "alpha"]))
    # whitespace and case are part of the exact text
    emb2.embed(["Alpha", "alpha "])
    assert sorted(inner2.seen) == ["Alpha", "alpha ", "delta"]


def test_cached_embedder_without_database_memoises_in_memory(db):
    inner = CountingEmbedder(8)
    emb = embcache.CachedEmbedder(inner, None)
    emb.embed(["a", "b"])
    emb.embed(["b", "a", "c"])
    assert inner.seen == ["a", "b", "c"] and (emb.hits, emb.embedded) == (2, 3)
    assert embcache.count(db) == 0  # nothing written


@pytest.mark.slow
def test_minilm_vectors_from_the_cache_equal_fresh_ones(db, minilm):
    texts = ["Where is my parcel?", "The app crashes on start", "I want a refund for order 42", "hello"]
    fresh = minilm.embed(texts)
    first = embcache.CachedEmbedder(minilm, db)
    np.testing.assert_array_equal(first.embed(texts), fresh)
    second = embcache.CachedEmbedder(minilm, db)
    from_cache = second.embed(texts)
    assert (second.hits, second.embedded) == (4, 0)
    np.testing.assert_array_equal(from_cache, fresh)
    assert embcache.count(db, minilm.model_id) == 4
