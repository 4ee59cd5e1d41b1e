"""WordGrams: scikit-learn's word 1-2-gram counts, exactly, from per-word token caches and array lookups."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from embedclf.heads import wordgrams
from embedclf.heads.tfidf import TOKEN_PATTERN, TfidfFeaturizer, _Part
from embedclf.heads.wordgrams import WordGrams
from tests.heads.test_tfidf import NEW, TRICKY
from tests.training.textdata import make_texts

TEXTS, _ = make_texts(40, seed=5)
#: texts whose neighbouring tokens straddle punctuation, Unicode spaces, case, repeats, unknown words
EXTRA = ["the the the the", "one", "", "x y", "two words", "order-ID: 1234 ... order id", "a\u2029b c\u3000d",
         "UNKNOWN tokens only zzqx", "ﬀ ligature Ǆ titlecase ǅ", "über über über"]


def test_no_character_is_both_whitespace_and_a_word_character():
    """What splitting a text on whitespace before tokenizing it rests on (all of Unicode)."""
    word = re.compile(r"\w")
    both = [hex(c) for c in range(0x110000) if chr(c).isspace() and word.match(chr(c))]
    assert both == []
    assert CountVectorizer().token_pattern == TOKEN_PATTERN


def counts(grams: WordGrams, texts: list[str], n_cols: int) -> sp.csr_matrix:
    ids, indptr = grams.ids(texts)
    assert ids.dtype == np.int32 and indptr.dtype == np.int64 and len(indptr) == len(texts) + 1
    m = sp.csr_matrix((np.ones(len(ids)), ids, indptr), shape=(len(texts), n_cols))
    m.sum_duplicates()
    return m


@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("max_features", [None, 40])
def test_counts_are_scikit_learn_s(ngram_range, lowercase, max_features):
    """With a capped vocabulary some tokens are only in bigrams, some bigrams' tokens in no term at all."""
    vec = CountVectorizer(ngram_range=ngram_range, lowercase=lowercase, max_features=max_features)
    vec.fit(TEXTS + TRICKY[:5])
    grams = WordGrams(vec.vocabulary_, ngram_range, lowercase, vec.build_tokenizer())
    texts = TEXTS + TRICKY + NEW + EXTRA
    expected = sp.csr_matrix(vec.transform(texts), dtype=np.float64)
    expected.sum_duplicates()
    for _ in range(2):  # the word cache cold, then warm
        got = counts(grams, texts, len(vec.vocabulary_))
        np.testing.assert_array_equal(got.indptr, expected.indptr)
        np.testing.assert_array_equal(got.indices, expected.indices)
        np.testing.assert_array_equal(got.data, expected.data)
    for i in (0, len(TEXTS) + 3):  # one text at a time: the same row
        np.testing.assert_array_equal(counts(grams, texts[i:i + 1], len(vec.vocabulary_)).toarray()[0],
                                      expected.toarray()[i])


def test_a_batch_of_no_text_or_no_known_token():
    vec = CountVectorizer(ngram_range=(1, 2)).fit(["my card is lost", "card lost again"])
    grams = WordGrams(vec.vocabulary_, (1, 2), True, vec.build_tokenizer())
    ids, indptr = grams.ids([])
    assert len(ids) == 0 and indptr.tolist() == [0]
    ids, indptr = grams.ids(["", "zzz qqq", "   ", "x"])
    assert len(ids) == 0 and indptr.tolist() == [0, 0, 0, 0, 0]
    ids, indptr = grams.ids(["lost", "", "MY CARD"])  # a bigram never spans two texts: "lost" + "my" is not one
    assert indptr.tolist() == [0, 1, 1, 4]
    assert sorted(ids[1:].tolist()) == sorted([vec.vocabulary_[t] for t in ("my", "card", "my card")])


def test_the_word_cache_is_bounded_and_starts_over(monkeypatch):
    vec = CountVectorizer(ngram_range=(1, 2)).fit(TEXTS)
    grams = WordGrams(vec.vocabulary_, (1, 2), True, vec.build_tokenizer())
    monkeypatch.setattr(wordgrams, "WORD_CACHE_MAX", 3)
    expected = sp.csr_matrix(vec.transform(TEXTS), dtype=np.float64)
    expected.sum_duplicates()
    got = counts(grams, TEXTS, len(vec.vocabulary_))
    assert (got != expected).nnz == 0
    grams.ids(TEXTS[:1])  # the cache held more than 3 words: it started over with this text's words
    assert set(grams._words) == set(TEXTS[0].lower().split())


def test_what_it_does_not_count():
    vec = CountVectorizer(ngram_range=(1, 3)).fit(["one two three"])
    with pytest.raises(ValueError, match="1 or 2 tokens"):
        WordGrams(vec.vocabulary_, (1, 3), True, vec.build_tokenizer())
    with pytest.raises(ValueError, match="not a word 1- or 2-gram"):
        WordGrams({"one two three": 0}, (1, 2), True, vec.build_tokenizer())


def test_the_tfidf_word_part_uses_it_where_it_is_exact():
    """Every featurizer ``fit`` makes counts its word part this way; a stored part with 1-3-grams falls back to
    counting in Python (the same features as scikit-learn either way)."""
    f = TfidfFeaturizer.fit(TEXTS, max_features=None)
    assert isinstance(next(p for p in f.parts if p.params["analyzer"] == "word")._grams, WordGrams)
    assert all(p._grams is None for p in f.parts if p.params["analyzer"] != "word")
    vec = CountVectorizer(ngram_range=(1, 3)).fit(TEXTS)
    terms = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
    part = _Part("word", {"analyzer": "word", "ngram_range": [1, 3], "min_df": 1, "max_features": None}, terms,
                 np.ones(len(terms)), lowercase=True)
    assert part._grams is None
    got = part.counts(TEXTS + EXTRA)
    got.sum_duplicates()
    expected = sp.csr_matrix(vec.transform(TEXTS + EXTRA), dtype=np.float64)
    expected.sum_duplicates()
    assert (got != expected).nnz == 0
