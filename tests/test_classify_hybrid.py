"""A batch with a hybrid head (TF-IDF member over the texts) next to a dense head: rows = offline predictions."""

from __future__ import annotations

import pytest

from embedclf.classify import LoadedHead, classify_requests
from embedclf.embedders.fake import FakeEmbedder
from tests.helpers import loaded_head, req

DIM = 32


@pytest.fixture
def heads() -> dict[str, LoadedHead]:
    return {"support": loaded_head("support", ["billing", "bug", "shipping", "account"], version=3, seed=1)}


@pytest.fixture(scope="module")
def hybrid_head() -> LoadedHead:
    """A hybrid head (MLP + linear + TF-IDF member) trained on synthetic topic texts, with a threshold."""
    import dataclasses

    from embedclf.training.trainer import TrainParams, train_head
    from tests.training.textdata import make_texts

    texts, labels = make_texts(30, seed=8)
    res = train_head(FakeEmbedder(DIM).embed_batch(texts), labels,
                     TrainParams(hidden_dim=16, num_layers=2, epochs=3, tfidf_member=True, tfidf_epochs=5),
                     texts=texts)
    res.head.config = dataclasses.replace(res.head.config, abstain_threshold=0.5)
    return LoadedHead("hybrid", 2, f"fake:{DIM}", res.labels, res.head)


def test_hybrid_head_rows_match_offline_predictions_from_texts(heads, hybrid_head):
    from tests.training.textdata import make_texts

    texts, _ = make_texts(4, seed=9)
    texts += ["", "words it never saw", texts[0]]  # an empty TF-IDF row; a repeated text
    requests = [req(i, "hybrid" if i % 3 else "support", t) for i, t in enumerate(texts)]
    requests.append(req(99, "hybrid", texts[1]))
    emb = FakeEmbedder(DIM)
    rows = classify_requests(requests, emb, {**heads, "hybrid": hybrid_head})
    assert emb.calls == [len(set(texts))]  # the TF-IDF member needs no extra embedding
    vec = FakeEmbedder(DIM).embed_batch(texts)
    offline = hybrid_head.module.predict_proba(vec, texts)
    dense = heads["support"].module.predict_proba(vec)
    by_id = {r["task_id"]: r for r in rows}
    for i in list(range(len(texts))) + [99]:
        j = i if i < len(texts) else 1
        r = by_id[f"t{i}"]
        if i < len(texts) and i % 3 == 0:
            assert r["label"] == heads["support"].labels[int(dense[j].argmax())]
            continue
        p = offline[j]
        assert r["status"] == "ok" and r["head_version"] == 2
        assert r["top3"][0]["label"] == hybrid_head.labels[int(p.argmax())]
        assert r["score"] == pytest.approx(float(p.max()), abs=1e-6)
        assert r["abstained"] == bool(p.max() < 0.5)
        assert r["label"] == (None if p.max() < 0.5 else hybrid_head.labels[int(p.argmax())])


def test_multi_label_rows_apply_the_stored_min_max_labels_rule():
    """classify passes the head's min_labels / max_labels to the rows: the same rows as label_rows with them."""
    import dataclasses

    from embedclf.heads.mldecide import label_rows
    from embedclf.training.multilabel import MultiLabelParams, train_multilabel
    from tests.helpers import multilabel_texts

    texts, sets = multilabel_texts(150, seed=3)
    emb = FakeEmbedder(DIM)
    res = train_multilabel(emb.embed_batch(texts), sets, MultiLabelParams(epochs=2, hidden_dim=16,
                                                                          sparse_member=False, min_labels=0),
                           texts=texts)
    new, _ = multilabel_texts(12, seed=4)
    new += ["hello thanks again", "the a my"]
    proba = res.head.predict_proba(FakeEmbedder(DIM).embed_batch(new))
    for rule in ((0, 0), (1, 0), (1, 1)):
        res.head.config = dataclasses.replace(res.head.config, min_labels=rule[0], max_labels=rule[1])
        head = LoadedHead("tags", 1, f"fake:{DIM}", res.labels, res.head)
        rows = classify_requests([req(i, "tags", t) for i, t in enumerate(new)], FakeEmbedder(DIM), {"tags": head})
        expected = label_rows(proba, res.labels, res.head.thresholds(), min_labels=rule[0], max_labels=rule[1])
        for row, exp in zip(rows, expected):
            assert row["labels"] == exp["labels"] and row["abstained"] is exp["abstained"], rule
        if rule[0]:
            assert not any(r["abstained"] for r in rows)
        if rule[1]:
            assert all(len(r["labels"]) == 1 for r in rows)


class _RecordingPool:
    """A one-thread executor that records what was submitted to it (and on which thread it ran)."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(1, thread_name_prefix="text-pool")
        self.calls: list[tuple[str, int]] = []

    def submit(self, fn, texts):
        import threading

        def run():
            self.calls.append((threading.current_thread().name, len(texts)))
            return fn(texts)
        return self.pool.submit(run)


def test_text_pool_overlap_gives_the_same_rows(heads, hybrid_head):
    """With a text pool the TF-IDF logits are computed on the pool's thread, once per distinct text of the
    hybrid head, while the batch is embedded: the rows are exactly those computed without it."""
    from tests.training.textdata import make_texts

    texts, _ = make_texts(5, seed=11)
    texts += ["", texts[0], "unseen words only"]  # a repeated text: its logits are computed once
    requests = [req(i, "hybrid" if i % 4 else "support", t) for i, t in enumerate(texts)]
    all_heads = {**heads, "hybrid": hybrid_head}
    plain = classify_requests(requests, FakeEmbedder(DIM), all_heads)
    pool = _RecordingPool()
    try:
        ahead = classify_requests(requests, FakeEmbedder(DIM), all_heads, text_pool=pool)
    finally:
        pool.pool.shutdown()
    hybrid_texts = {t for i, t in enumerate(texts) if i % 4}
    assert len(pool.calls) == 1 and pool.calls[0][0].startswith("text-pool")
    assert pool.calls[0][1] == len(hybrid_texts)  # only the hybrid head's texts, each once
    assert ahead == plain


def test_text_pool_for_a_multi_label_head_with_a_sparse_member():
    from embedclf.training.multilabel import MultiLabelParams, train_multilabel
    from tests.helpers import multilabel_texts

    texts, sets = multilabel_texts(150, seed=5)
    res = train_multilabel(FakeEmbedder(DIM).embed_batch(texts), sets,
                           MultiLabelParams(epochs=2, hidden_dim=16, sparse_member=True), texts=texts)
    assert res.head.uses_texts
    head = LoadedHead("tags", 1, f"fake:{DIM}", res.labels, res.head)
    new, _ = multilabel_texts(10, seed=6)
    requests = [req(i, "tags", t) for i, t in enumerate(new)]
    pool = _RecordingPool()
    try:
        ahead = classify_requests(requests, FakeEmbedder(DIM), {"tags": head}, text_pool=pool)
    finally:
        pool.pool.shutdown()
    assert len(pool.calls) == 1
    assert ahead == classify_requests(requests, FakeEmbedder(DIM), {"tags": head})


def test_precomputed_sparse_logits_equal_texts_and_are_checked(hybrid_head):
    from tests.training.textdata import make_texts

    texts, _ = make_texts(3, seed=12)
    module = hybrid_head.module
    vec = FakeEmbedder(DIM).embed_batch(texts)
    from_texts = module.predict_proba(vec, texts)
    assert (module.predict_proba(vec, sparse=module.sparse_logits(texts)) == from_texts).all()
    with pytest.raises(ValueError, match="precomputed TF-IDF logits"):
        module.predict_proba(vec, sparse=module.sparse_logits(texts[:-1]))  # one row short
