"""TfidfFeaturizer: the baseline's features, exact round trips through JSON + safetensors, strict loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from embedclf.heads.tfidf import TfidfFeaturizer, baseline_vectorizers
from tests.training.textdata import make_texts

TEXTS, _ = make_texts(30, seed=3)
NEW = ["my parcel is delayed again", "Ünïcödé café naïve — déjà vu", "", "zzzz qqqq never seen",
       "LOGIN  reset\tpassword"]


def roundtrip(f: TfidfFeaturizer) -> TfidfFeaturizer:
    """Through the storage formats a head uses: JSON text + safetensors bytes."""
    config = json.loads(json.dumps(f.config(), sort_keys=True))  # stores reorder keys (JSONB, sort_keys)
    return TfidfFeaturizer.from_tensors(config, st_load(st_save(f.to_tensors())))


def assert_same_csr(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


@pytest.fixture(scope="module")
def feats() -> TfidfFeaturizer:
    return TfidfFeaturizer.fit(TEXTS + NEW[:2], max_features=None)


def test_transform_is_float32_csr_with_unit_norm_parts(feats):
    x = feats.transform(TEXTS[:7] + NEW)
    assert sp.isspmatrix_csr(x) and x.dtype == np.float32
    assert x.shape == (12, feats.n_features)
    n_word = feats.config()["parts"][0]["n_terms"]
    for part in (x[:, :n_word], x[:, n_word:]):
        norms = np.sqrt(np.asarray(part.multiply(part).sum(1))).ravel()
        nonzero = norms > 0
        np.testing.assert_allclose(norms[nonzero], 1.0, rtol=1e-5)
    assert x[9].nnz == 0 or x[9, :n_word].nnz == 0  # "" has no words; unknown words give no word columns


def test_features_match_the_baseline_definition(feats):
    from sklearn.pipeline import FeatureUnion

    union = FeatureUnion(baseline_vectorizers()).fit(TEXTS + NEW[:2])
    expected = union.transform(TEXTS + NEW)
    np.testing.assert_allclose(feats.transform(TEXTS + NEW).toarray(), expected.toarray(), rtol=1e-6, atol=1e-7)


def test_features_of_tricky_texts_and_batches_match_the_baseline(feats):
    """All parts in one pass (one sort of row-and-column keys): the baseline's features on tricky Unicode and
    whitespace, rows with no known term, texts that repeat their terms, any batch size (one text, none)."""
    from sklearn.pipeline import FeatureUnion

    union = FeatureUnion(baseline_vectorizers()).fit(TEXTS + NEW[:2])
    texts = TRICKY + NEW + TEXTS[:3]
    expected = union.transform(texts).toarray()
    got = feats.transform(texts)
    assert got.has_sorted_indices and got.nnz == np.count_nonzero(expected)
    np.testing.assert_allclose(got.toarray(), expected, rtol=1e-6, atol=1e-7)
    for i in (0, len(TRICKY) + 2):  # one text at a time: the same row
        np.testing.assert_array_equal(feats.transform(texts[i:i + 1]).toarray()[0], got.toarray()[i])
    assert feats.transform([]).shape == (0, feats.n_features)


def test_every_sort_gives_the_same_features(feats, monkeypatch):
    """The keys' sort is chosen per host by timing (``sort_kind``): every choice gives the same features,
    bit for bit (equal integer keys are indistinguishable, so stability cannot matter)."""
    from embedclf.heads import keysort

    assert keysort.sort_kind() in ("quicksort", "stable", "radix")
    texts = TRICKY + NEW + TEXTS
    out = {}
    for kind in ("quicksort", "stable", "radix"):
        monkeypatch.setattr(keysort, "_sort_kind", kind)
        x = feats.transform(texts)
        out[kind] = (x.indptr.copy(), x.indices.copy(), x.data.copy())
    for kind in ("stable", "radix"):
        for a, b in zip(out["quicksort"], out[kind]):
            np.testing.assert_array_equal(a, b)


def test_a_char_analyzer_part_gives_scikit_learn_s_features():
    """A stored featurizer may use the plain ``char`` analyzer (counted by scikit-learn, then expanded
    into repeated indices like the other parts): scikit-learn's features, also after a round trip."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from embedclf.heads.tfidf import _Part

    vec = TfidfVectorizer(analyzer="char", ngram_range=(2, 3), sublinear_tf=True).fit(TEXTS)
    terms = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
    part = _Part("char", {"analyzer": "char", "ngram_range": [2, 3], "min_df": 1, "max_features": None},
                 terms, vec.idf_, lowercase=True)
    f = TfidfFeaturizer([part])
    texts = NEW + TRICKY
    expected = vec.transform(texts).toarray()
    np.testing.assert_allclose(f.transform(texts).toarray(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(roundtrip(f).transform(texts).toarray(), expected, rtol=1e-6, atol=1e-7)


def test_round_trip_reproduces_transform_exactly(feats):
    again = roundtrip(feats)
    assert again.config() == feats.config()
    assert [p["name"] for p in again.config()["parts"]] == ["word", "char"]  # column order kept
    assert_same_csr(again.transform(TEXTS + NEW), feats.transform(TEXTS + NEW))


def test_tensors_are_plain_arrays_and_config_is_small(feats):
    tensors = feats.to_tensors()
    assert set(tensors) == TfidfFeaturizer.tensor_names(feats.config())
    assert len(json.dumps(feats.config())) < 500  # the vocabulary lives in tensors, not in the JSON config


def test_max_features_caps_each_analyzer():
    capped = TfidfFeaturizer.fit(TEXTS, max_features=25)
    parts = capped.config()["parts"]
    assert [(p["name"], p["n_terms"]) for p in parts] == [("word", 25), ("char", 25)]
    assert capped.n_features == 50
    assert_same_csr(roundtrip(capped).transform(NEW), capped.transform(NEW))


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="needs texts"):
        TfidfFeaturizer.fit([])
    with pytest.raises(ValueError, match="max_features"):
        TfidfFeaturizer.fit(TEXTS, max_features=0)


@pytest.mark.parametrize("breaks, match", [
    (lambda c, t: c.update(extra=1), "unknown keys"),
    (lambda c, t: c.pop("lowercase"), "missing keys"),
    (lambda c, t: c.update(version=99), "version"),
    (lambda c, t: t.pop("char.idf"), "missing"),
    (lambda c, t: t.update({"char.other": t["char.idf"]}), "unexpected"),
    (lambda c, t: c["parts"][0].update(n_terms=c["parts"][0]["n_terms"] + 1), "terms"),
    (lambda c, t: c["parts"][0].update(analyzer="magic"), "analyzer"),
    (lambda c, t: c["parts"][0].update(stop_words="english"), "keys must be"),
    (lambda c, t: t.update({"word.idf": t["word.idf"].float()}), "float64"),
    (lambda c, t: t.update({"word.idf": t["word.idf"][:-1]}), "idf weights"),
    (lambda c, t: t.update({"word.vocab_offsets": t["word.vocab_offsets"][:-1]}), "offsets"),
    (lambda c, t: t.update({"word.vocab_bytes": t["word.vocab_bytes"].clone().fill_(0xFF)}), "UTF-8"),
])
def test_strict_loading(feats, breaks, match):
    config, tensors = json.loads(json.dumps(feats.config())), dict(feats.to_tensors())
    breaks(config, tensors)
    with pytest.raises(ValueError, match=match):
        TfidfFeaturizer.from_tensors(config, tensors)


TRICKY = ["ΣΊΣΥΦΟΣ ΌΔΟΣ", "İstanbul IŞIK ılık", "ﬁnance ﬂow ß STRASSE", "a\u00a0b\u2003c\u2028d\te\nf  g",
          "emoji 🙂🙂 x", "", "   ", "x", "repeat repeat repeat Repeat REPEAT", "über-über über_über",
          "tab\t\tsplit\r\nlines", "\u200bzero\u200bwidth", "MiXeD CaSe wOrDs", "my parcel is delayed again"]


@pytest.mark.parametrize("max_features", [None, 50])
def test_char_counts_per_word_equal_scikit_learn_s(monkeypatch, max_features):
    """The char_wb part looks its n-grams up once per distinct word (cached): the counts are scikit-learn's
    own, exactly, on tricky Unicode and whitespace too, with the cache cold, warm and started over."""
    import embedclf.heads.tfidf as tfidf

    f = TfidfFeaturizer.fit(TEXTS + TRICKY[:4], max_features=max_features)
    part = next(p for p in f.parts if p.params["analyzer"] == "char_wb")
    texts = TEXTS + TRICKY + NEW
    expected = sp.csr_matrix(part.counter.transform(texts), dtype=np.float64)
    expected.sum_duplicates()
    for _ in range(2):  # cold, then warm
        got = part.counts(texts)
        got.sum_duplicates()
        assert_same_csr(got, expected)
    assert "repeat" in part._word_ids and len(part._word_ids) < sum(len(t.split()) for t in texts)
    monkeypatch.setattr(tfidf, "WORD_CACHE_MAX", 3)  # a full cache starts over
    got = part.counts(texts)
    got.sum_duplicates()
    assert_same_csr(got, expected)
    part.counts(texts[:1])  # the cache held more than 3 words: it started over with this text's words
    assert set(part._word_ids) == set(texts[0].lower().split())


@pytest.mark.parametrize("max_features", [None, 50])
def test_word_counts_equal_scikit_learn_s(max_features):
    """The word part counts its 1-2-grams itself (scikit-learn's preprocessor and tokenizer, no per-call
    overhead): the counts are scikit-learn's own, exactly, on tricky Unicode and whitespace too."""
    f = TfidfFeaturizer.fit(TEXTS + TRICKY[:4], max_features=max_features)
    part = next(p for p in f.parts if p.params["analyzer"] == "word")
    texts = TEXTS + TRICKY + NEW + ["one", "", "x y", "two words", "the the the the"]
    expected = sp.csr_matrix(part.counter.transform(texts), dtype=np.float64)
    expected.sum_duplicates()
    got = part.counts(texts)
    got.sum_duplicates()
    assert_same_csr(got, expected)
    assert got.nnz > len(texts)  # bigrams included, not just words
