"""Words and Pool: a batch's words looked up once for every TF-IDF part, their values gathered as arrays."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.sparse as sp

from embedclf.heads import wordgrams
from embedclf.heads.tfidf import TfidfFeaturizer
from embedclf.heads.wordpool import Pool, Words
from tests.heads.test_tfidf import NEW, TRICKY
from tests.training.textdata import make_texts

TEXTS, _ = make_texts(40, seed=11)


def encoders():
    """Two parts that keep different values per word: its characters' code points, and its length (once)."""
    return [lambda w: [ord(c) for c in w], lambda w: [len(w)]]


def expected(texts, lowercase=True):
    counts, first, second = [], [], []
    for t in texts:
        words = (t.lower() if lowercase else t).split()
        counts.append(len(words))
        for w in words:
            first.append([ord(c) for c in w])
            second.append([len(w)])
    return counts, first, second


def check(words: Words, texts, lowercase=True):
    counts, gathered = words.gather(texts)
    want_counts, *want = expected(texts, lowercase)
    np.testing.assert_array_equal(counts, want_counts)
    assert counts.dtype == np.int64
    for (values, lengths), per_word in zip(gathered, want):
        assert values.dtype == np.int32 and lengths.dtype == np.int64
        np.testing.assert_array_equal(lengths, [len(v) for v in per_word])
        np.testing.assert_array_equal(values, [x for v in per_word for x in v])


def test_pool_gathers_each_word_s_values_in_order_and_grows():
    pool = Pool()
    rng = np.random.default_rng(0)
    values = [rng.integers(0, 1000, rng.integers(0, 40)) for _ in range(3000)]  # past both initial capacities
    for v in values:
        pool.append(v)
    assert pool.n == 3000
    keys = rng.integers(0, 3000, 5000)
    got, lengths = pool.gather(keys)
    np.testing.assert_array_equal(lengths, [len(values[k]) for k in keys])
    np.testing.assert_array_equal(got, np.concatenate([values[k] for k in keys]))
    empty, none = pool.gather(np.zeros(0, dtype=np.int64))
    assert len(empty) == 0 and len(none) == 0


@pytest.mark.parametrize("lowercase", [True, False])
def test_words_split_once_and_encode_each_distinct_word_once(lowercase):
    seen: list[str] = []
    enc = encoders()
    words = Words([lambda w: seen.append(w) or enc[0](w), enc[1]], lowercase, limit=10_000)
    texts = TEXTS + TRICKY + NEW + ["", "   "]
    check(words, texts, lowercase)
    assert len(seen) == len(set(seen)) == len(words.index)  # once per distinct word
    before = len(seen)
    check(words, texts, lowercase)  # warm: nothing encoded again
    assert len(seen) == before
    check(words, [], lowercase)


def test_a_full_index_starts_over_at_the_next_batch():
    words = Words(encoders(), True, limit=5)
    check(words, TEXTS[:10])
    assert len(words.index) > 5
    check(words, ["only these words"])
    assert set(words.index) == {"only", "these", "words"}


def test_threads_sharing_words_get_their_own_texts_values():
    """The text pool may run one head in several threads: starting over and adding words under a lock."""
    words = Words(encoders(), True, limit=50)
    batches = [TEXTS[i::7] + TRICKY[i % 5:] for i in range(7)]
    errors: list[BaseException] = []

    def run(batch):
        try:
            for _ in range(30):
                check(words, batch)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("max_features", [None, 40])
def test_pooled_features_equal_each_part_s_own_bit_for_bit(monkeypatch, max_features):
    """The featurizer's one split for all parts gives the same CSR as each part reading the texts itself
    (those paths are compared with scikit-learn in test_tfidf.py / test_wordgrams.py): cold, warm, started
    over, one text, none."""
    f = TfidfFeaturizer.fit(TEXTS + TRICKY[:4], max_features=max_features)
    assert f._words is not None
    texts = TRICKY + NEW + TEXTS + ["the the the the", "x y", "über über"]

    def per_part(batch):
        words, f._words = f._words, None
        try:
            return f.transform(batch)
        finally:
            f._words = words

    def same(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
        assert a.shape == b.shape
        for x, y in ((a.indptr, b.indptr), (a.indices, b.indices), (a.data, b.data)):
            np.testing.assert_array_equal(x, y)

    want = per_part(texts)
    same(f.transform(texts), want)  # cold
    same(f.transform(texts), want)  # warm
    monkeypatch.setattr(f._words, "limit", 3)
    same(f.transform(texts[:5]), per_part(texts[:5]))
    same(f.transform(texts), want)  # started over
    same(f.transform(texts[7:8]), per_part(texts[7:8]))
    assert f.transform([]).shape == (0, f.n_features)


def test_a_deep_copy_has_its_own_lock_and_the_same_features():
    import copy

    f = TfidfFeaturizer.fit(TEXTS)
    x = f.transform(TEXTS)
    g = copy.deepcopy(f)
    assert g._words._lock is not f._words._lock
    assert (g.transform(TEXTS) != x).nnz == 0 and g.transform(TRICKY).shape == (len(TRICKY), f.n_features)


def test_the_word_cache_limit_is_the_featurizer_s():
    f = TfidfFeaturizer.fit(TEXTS)
    assert f._words.limit == wordgrams.WORD_CACHE_MAX
