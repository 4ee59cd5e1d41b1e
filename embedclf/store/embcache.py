"""The embedding cache in Postgres: vectors keyed by (embedder id, sha256 of the exact text).

:class:`CachedEmbedder` wraps any embedder: ``embed`` looks every text up in bulk (one query
per chunk), embeds only the unseen ones with the wrapped embedder and stores them
(multi-row ``INSERT ... ON CONFLICT DO NOTHING``). Training and evaluation use it through the CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sqlalchemy import and_, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from embedclf.embedders.base import Embedder, ProgressFn
from embedclf.store.datasets import text_sha256
from embedclf.store.db import transaction
from embedclf.store.tables import embedding_cache

log = logging.getLogger(__name__)

#: keys per lookup query / rows per insert statement
GET_CHUNK = 2000
PUT_CHUNK = 500


def get_many(engine: Engine, embedder_id: str, keys: Sequence[bytes], dim: int | None = None) -> dict[bytes,
                                                                                                      np.ndarray]:
    """Cached vectors of ``keys`` (sha256 digests) that exist; one query per :data:`GET_CHUNK` keys.

    With ``dim`` given, rows of another dimension are ignored (a model id reused for another size).
    """
    out: dict[bytes, np.ndarray] = {}
    c = embedding_cache.c
    with engine.connect() as conn:
        for start in range(0, len(keys), GET_CHUNK):
            chunk = list(keys[start : start + GET_CHUNK])
            cond = and_(c.embedder_id == embedder_id, c.text_sha256.in_(chunk))
            if dim is not None:
                cond = and_(cond, c.dim == dim)
            for key, vec in conn.execute(select(c.text_sha256, c.vector).where(cond)):
                out[bytes(key)] = np.frombuffer(bytes(vec), dtype="<f4")
    return out


def put_many(engine: Engine, embedder_id: str, keys: Sequence[bytes], vectors: np.ndarray) -> int:
    """Store float32 ``vectors`` [n, dim] under ``keys``; existing keys are kept. Returns rows inserted."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if vectors.ndim != 2 or len(vectors) != len(keys):
        raise ValueError(f"expected [{len(keys)}, dim] vectors, got {vectors.shape}")
    dim = int(vectors.shape[1])
    inserted = 0
    with transaction(engine) as conn:
        for start in range(0, len(keys), PUT_CHUNK):
            rows = [{"embedder_id": embedder_id, "text_sha256": k, "dim": dim, "vector": vectors[start + i].tobytes()}
                    for i, k in enumerate(keys[start : start + PUT_CHUNK])]
            stmt = pg_insert(embedding_cache).values(rows).on_conflict_do_nothing(
                index_elements=["embedder_id", "text_sha256"])
            inserted += conn.execute(stmt).rowcount
    return inserted


def count(engine: Engine, embedder_id: str | None = None) -> int:
    q = select(func.count()).select_from(embedding_cache)
    if embedder_id is not None:
        q = q.where(embedding_cache.c.embedder_id == embedder_id)
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def clear(engine: Engine, embedder_id: str | None = None) -> int:
    stmt = embedding_cache.delete()
    if embedder_id is not None:
        stmt = stmt.where(embedding_cache.c.embedder_id == embedder_id)
    with transaction(engine) as conn:
        return conn.execute(stmt).rowcount


class CachedEmbedder(Embedder):
    """An embedder that reads and fills the Postgres cache; counts what it embedded and what it found.

    Same ``model_id`` and ``dim`` as the wrapped embedder. ``hits`` and ``embedded`` add up over calls.
    Vectors are also kept in memory for the object's life, so a second ``embed`` of the same texts
    (e.g. a search, then the final training) touches neither the model nor the database; with
    ``engine=None`` that in-memory memo is the only cache (``--no-cache``).
    """

    def __init__(self, inner: Embedder, engine: Engine | None) -> None:
        self.inner = inner
        self.engine = engine
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.batch_size = inner.batch_size
        self.hits = 0
        self.embedded = 0
        self._memo: dict[bytes, np.ndarray] = {}

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)

    def count_tokens(self, text: str) -> int | None:
        return self.inner.count_tokens(text)

    def max_tokens_per_text(self) -> int | None:
        return self.inner.max_tokens_per_text()

    def embed(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        keys = [text_sha256(t) for t in texts]
        unique = list(dict.fromkeys(keys))
        found = {k: self._memo[k] for k in unique if k in self._memo}
        if self.engine is not None and len(found) < len(unique):
            found.update(get_many(self.engine, self.model_id, [k for k in unique if k not in found], dim=self.dim))
        missing = [k for k in unique if k not in found]
        first_text = dict(zip(reversed(keys), reversed(range(len(keys)))))  # key -> first index
        n_cached_rows = sum(1 for k in keys if k in found)
        if progress is not None and n_cached_rows:
            progress(n_cached_rows)
        if missing:
            miss_texts = [texts[first_text[k]] for k in missing]
            miss_rows = len(keys) - n_cached_rows

            done = [0]

            def report(n: int) -> None:  # progress counts rows; repeated texts are embedded once
                before = done[0] * miss_rows // len(missing)
                done[0] += n
                progress(done[0] * miss_rows // len(missing) - before)  # type: ignore[misc]

            X_new = self.inner.embed(miss_texts, report if progress is not None else None)
            if self.engine is not None:
                put_many(self.engine, self.model_id, missing, X_new)
            found.update(zip(missing, X_new))
        self._memo.update(found)
        self.hits += len(unique) - len(missing)
        self.embedded += len(missing)
        log.info("embedding cache %s: %d texts, %d cached, %d embedded", self.model_id, len(texts),
                 len(unique) - len(missing), len(missing))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    def close(self) -> None:
        self.inner.close()
