"""The text thread: a hybrid head's TF-IDF logits are computed while the batch is embedded, not after.

In-process worker (real Redis and Postgres, fake embedder): the embedder blocks inside ``embed_batch``
until the head's sparse logits have started on the text thread, which can only happen if the two
overlap. ``EMBEDCLF_TEXT_THREAD=false`` computes them after the embedding, on the batch thread.
"""

from __future__ import annotations

import threading

import pytest

from embedclf.client import Client
from embedclf.embedders.fake import FakeEmbedder
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.store import repository as repo
from embedclf.training.trainer import TrainParams, train_head
from tests.training.textdata import make_texts
from tests.worker.test_pipeline import make_service, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


class Waiting(FakeEmbedder):
    """Waits (up to 2 s) inside a batch holding the ``watch`` texts for ``started`` to be set; records whether
    it was."""

    def __init__(self, watch: list[str]) -> None:
        super().__init__(32)
        self.watch = set(watch)
        self.started = threading.Event()
        self.overlapped: list[bool] = []

    def embed_batch(self, texts):
        if self.watch & set(texts):
            self.overlapped.append(self.started.wait(2.0))
        return super().embed_batch(texts)


def all_ok(engine, n: int) -> bool:
    """Waits for ``n`` rows; True when every one is ``ok``."""
    from sqlalchemy import text

    def statuses():
        with engine.connect() as conn:
            return conn.execute(text("SELECT status FROM predictions")).scalars().all()

    wait_for(lambda: len(statuses()) == n, what="the rows")
    return statuses() == ["ok"] * n


def _hybrid(engine) -> None:
    texts, labels = make_texts(20, seed=31)
    emb = FakeEmbedder(32)
    res = train_head(emb.embed_batch(texts), labels,
                     TrainParams(hidden_dim=16, num_layers=2, epochs=2, tfidf_member=True, tfidf_epochs=2), texts=texts)
    repo.add_head_version(engine, "hybrid", HeadArtifact.from_head(res.head, res.labels, emb.model_id))


@pytest.mark.parametrize("text_thread", [True, False])
def test_sparse_logits_overlap_the_embedding(clean_db, pg_url, redis_url, queue, services, text_thread):
    _hybrid(clean_db)
    texts = make_texts(3, seed=32)[0][:5]  # one embedding call (batches of 8)
    emb = Waiting(texts)
    s = make_service(pg_url, redis_url, queue, embedder=emb, text_thread=text_thread)
    services.append(s)
    head = s.res.heads.snapshot()["hybrid"].module
    threads: list[str] = []
    original = head.sparse.logits  # both paths go through the TF-IDF member's own logits

    def recording(texts):
        if emb.watch & set(texts):  # not the warm-up's texts
            threads.append(threading.current_thread().name)
            emb.started.set()
        return original(texts)

    head.sparse.logits = recording
    s.start()
    client = Client(redis_url, queue)
    client.classify_many("hybrid", texts, per_task=len(texts))
    client.close()
    assert all_ok(clean_db, len(texts))
    if text_thread:
        assert emb.overlapped == [True]  # the logits started while embed_batch was running
        assert threads[-1].startswith("embedclf-text")
    else:
        assert emb.overlapped == [False]  # nothing ran during the embedding: it waited out its 2 s
        assert threads[-1] == "embedclf-batch"


class TwoBatches(FakeEmbedder):
    """Records whether the first batch's heads were still running when the second batch's embedding began."""

    def __init__(self, first: list[str], second: list[str]) -> None:
        super().__init__(32)
        self.first, self.second = set(first), set(second)
        self.first_embedded = threading.Event()
        self.second_started = threading.Event()

    def embed_batch(self, texts):
        if self.second & set(texts):
            self.second_started.set()
        out = super().embed_batch(texts)
        if self.first & set(texts):
            self.first_embedded.set()
        return out


@pytest.mark.parametrize("head_overlap", [True, False])
def test_heads_of_one_batch_run_while_the_next_is_embedded(clean_db, pg_url, redis_url, queue, services,
                                                           head_overlap):
    """EMBEDCLF_HEAD_OVERLAP (default on): the text thread applies batch k's heads while the batch thread embeds
    batch k+1. The first batch's heads wait (up to 2 s) for the second batch's embedding to start: they see it
    only if the two overlap. Off: the heads run on the batch thread, before it embeds anything else."""
    _hybrid(clean_db)
    texts = make_texts(4, seed=33)[0][:16]
    emb = TwoBatches(texts[:8], texts[8:])  # batches of 8 texts: two batches
    s = make_service(pg_url, redis_url, queue, embedder=emb, head_overlap=head_overlap)
    services.append(s)
    head = s.res.heads.snapshot()["hybrid"].module
    seen: list[tuple[str, bool]] = []
    original = head.predict_proba

    def recording(*args, **kwargs):
        if emb.first_embedded.is_set() and not seen:  # the first batch's heads (not the warm-up's)
            seen.append((threading.current_thread().name, emb.second_started.wait(2.0)))
        return original(*args, **kwargs)

    head.predict_proba = recording
    client = Client(redis_url, queue)
    client.classify_many("hybrid", texts, per_task=8)  # queued before the worker starts: both batches wait
    client.close()
    s.start()
    assert all_ok(clean_db, len(texts))
    thread, overlapped = seen[0]
    if head_overlap:
        assert thread.startswith("embedclf-text") and overlapped
    else:
        assert thread == "embedclf-batch" and not overlapped


@pytest.mark.parametrize("text_threads", [1, 2])
def test_text_threads_apply_the_heads_of_several_batches_at_once(clean_db, pg_url, redis_url, queue, services,
                                                                 text_threads):
    """EMBEDCLF_TEXT_THREADS=2: while the first batch's heads still run on one thread of the text pool, the next
    batch's heads start on another (the first waits up to 2 s for a second one to be running beside it). With 1
    thread they take turns, so the first waits its 2 s out. Every row is classified either way."""
    _hybrid(clean_db)
    texts = make_texts(4, seed=34)[0][:24]
    s = make_service(pg_url, redis_url, queue, text_threads=text_threads)
    services.append(s)
    head = s.res.heads.snapshot()["hybrid"].module
    original = head.predict_proba
    lock, beside = threading.Lock(), threading.Event()
    running, names, overlapped = [0], [], []

    def recording(*args, **kwargs):
        if "sparse" not in kwargs:  # the warm-up (its texts, no logits computed ahead)
            return original(*args, **kwargs)
        with lock:
            running[0] += 1
            first = not names
            names.append(threading.current_thread().name)
            if running[0] > 1:
                beside.set()
        try:
            if first:
                overlapped.append(beside.wait(2.0))
            return original(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    head.predict_proba = recording
    client = Client(redis_url, queue)
    client.classify_many("hybrid", texts, per_task=8)  # three batches of 8, queued before the worker starts
    client.close()
    s.start()
    assert all_ok(clean_db, len(texts))
    assert all(n.startswith("embedclf-text") for n in names) and len(names) == 3
    if text_threads == 2:
        assert overlapped == [True] and len(set(names[:2])) == 2
    else:
        assert overlapped == [False] and len(set(names)) == 1
