"""TF-IDF features for heads: word 1-2-grams + char_wb 2-5-grams, stored without pickle. Pure.

These are the TF-IDF baseline's features (one definition, :data:`PARTS`, used by both):
two analyzers, each with sublinear tf (``1 + log(count)``), smoothed idf and its own L2
row normalisation, side by side (word columns first, then char columns), as
scikit-learn's ``FeatureUnion`` of two ``TfidfVectorizer`` s produces them.

API::

    feats = TfidfFeaturizer.fit(train_texts, max_features=50_000)
    X = feats.transform(texts)                  # scipy.sparse.csr_matrix, float32, [n, feats.n_features]
    config, tensors = feats.config(), feats.to_tensors()  # JSON-able dict, {name: torch.Tensor}
    same = TfidfFeaturizer.from_tensors(config, tensors)  # same.transform(texts) == X, exactly

``config()`` holds the analyzer parameters and vocabulary sizes (small: it goes into the
head's JSON config); the vocabulary itself (UTF-8 bytes + offsets) and the idf weights are
tensors, stored with the head's other weights in safetensors. Loading is strict: unknown
config keys, missing or extra tensors, or sizes that disagree raise :class:`ValueError`.

``transform`` is computed the same way before and after a round trip (fixed-vocabulary
counting, then tf/idf/normalisation here), so a stored featurizer reproduces its
features bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from embedclf.errors import HeadLoadError
from embedclf.heads import keysort
from embedclf.heads.keysort import sorted_keys
from embedclf.heads.wordgrams import WORD_CACHE_MAX, WordGrams
from embedclf.heads.wordpool import Words

#: the baseline's two analyzers; ``min_df`` applies when fitting only
PARTS: dict[str, dict[str, Any]] = {
    "word": {"analyzer": "word", "ngram_range": (1, 2), "min_df": 1},
    "char": {"analyzer": "char_wb", "ngram_range": (2, 5), "min_df": 2},
}
#: settings shared by both analyzers (scikit-learn's defaults apart from sublinear tf)
COMMON: dict[str, Any] = {"lowercase": True, "sublinear_tf": True, "smooth_idf": True, "norm": "l2"}
#: default vocabulary cap per analyzer for heads (the most frequent terms are kept)
DEFAULT_MAX_FEATURES = 20_000
CONFIG_VERSION = 1
_ANALYZERS = {"word", "char_wb", "char"}
_PART_KEYS = {"name", "analyzer", "ngram_range", "min_df", "max_features", "n_terms"}
_CONFIG_KEYS = {"version", "parts", "lowercase"}


def baseline_vectorizers(max_features: int | None = None) -> list[tuple[str, Any]]:
    """``(name, TfidfVectorizer)`` per analyzer: the baseline's feature definition."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return [
        (name, TfidfVectorizer(analyzer=p["analyzer"], ngram_range=p["ngram_range"], min_df=p["min_df"],
                               max_features=max_features, lowercase=COMMON["lowercase"],
                               sublinear_tf=COMMON["sublinear_tf"], smooth_idf=COMMON["smooth_idf"],
                               norm=COMMON["norm"], dtype=np.float64))
        for name, p in PARTS.items()
    ]


#: scikit-learn's default token pattern (the word analyzer's): runs of two or more word characters
TOKEN_PATTERN = r"(?u)\b\w\w+\b"


class _Part:
    """One analyzer: its vocabulary (terms in column order), idf weights and a fixed-vocabulary counter."""

    def __init__(self, name: str, params: dict[str, Any], terms: list[str], idf: np.ndarray,
                 lowercase: bool) -> None:
        from sklearn.feature_extraction.text import CountVectorizer

        if len(terms) != len(idf):
            raise ValueError(f"tfidf part {name!r}: {len(terms)} terms but {len(idf)} idf weights")
        if not terms:
            raise ValueError(f"tfidf part {name!r} has an empty vocabulary")
        if len(set(terms)) != len(terms):
            raise ValueError(f"tfidf part {name!r}: duplicate vocabulary terms")
        self.name, self.params, self.terms = name, params, terms
        self.idf = np.asarray(idf, dtype=np.float64)
        self.counter = CountVectorizer(analyzer=params["analyzer"], ngram_range=tuple(params["ngram_range"]),
                                       lowercase=lowercase, vocabulary=terms, dtype=np.float64)
        # with a fixed vocabulary fit() learns nothing, but it indexes the vocabulary once
        # (transform would otherwise rebuild that dict on every call)
        self.counter.fit(terms[:1])
        self.lowercase = lowercase
        #: char_wb n-grams never cross a word: each word's column indices, computed once (bounded)
        self._word_ids: dict[str, np.ndarray] = {}
        self._analyze: Any = None
        #: scikit-learn's own preprocessing and tokenizing, for word n-grams counted here
        self._preprocess = self.counter.build_preprocessor()
        self._tokenize = self.counter.build_tokenizer()
        #: word 1-2-grams as array lookups (:mod:`embedclf.heads.wordgrams`) where they give scikit-learn's own
        #: counts: its default token pattern and no accent stripping (what every part here is built with)
        self._grams = None
        if (params["analyzer"] == "word" and int(params["ngram_range"][1]) <= 2 and self.counter.tokenizer is None
                and self.counter.token_pattern == TOKEN_PATTERN and self.counter.strip_accents is None
                and self.counter.preprocessor is None):
            self._grams = WordGrams(self.counter.vocabulary_, params["ngram_range"], lowercase, self._tokenize)

    def ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The vocabulary index of every n-gram of ``texts`` that is in the vocabulary, text after text, repeats
        kept (int32), and where each text's run starts (``indptr``, ``len(texts) + 1`` entries, int64):
        scikit-learn's counts before duplicates are summed. Word n-grams are looked up here, char_wb n-grams
        once per distinct word."""
        if self._grams is not None:
            return self._grams.ids(texts)
        if self.params["analyzer"] == "word":
            return self._word_ids_of(texts)
        if self.params["analyzer"] != "char_wb":
            m = sp.csr_matrix(self.counter.transform(texts))  # counts summed: each index repeated count times
            reps = m.data.astype(np.int64)
            ends = np.concatenate([[0], np.cumsum(reps)])
            return np.repeat(m.indices, reps).astype(np.int32), ends[m.indptr].astype(np.int64)
        cache = self._word_ids
        if len(cache) > WORD_CACHE_MAX:
            cache.clear()
        parts, indptr = [], [0]
        for text in texts:
            # what scikit-learn's char_wb analyzer does: preprocess the text, split it on whitespace,
            # pad each word with one space and take its n-grams
            n = indptr[-1]
            for word in (text.lower() if self.lowercase else text).split():
                ids = cache.get(word)
                if ids is None:
                    ids = cache[word] = self.word_columns(word)
                parts.append(ids)
                n += len(ids)
            indptr.append(n)
        indices = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        return indices, np.asarray(indptr, dtype=np.int64)

    def word_columns(self, word: str) -> np.ndarray:
        """A char_wb part's columns of one whitespace-free word's n-grams (int32, repeats kept)."""
        if self._analyze is None:
            self._analyze = self.counter.build_analyzer()
        vocab = self.counter.vocabulary_
        return np.fromiter((j for j in (vocab.get(g) for g in self._analyze(word)) if j is not None), dtype=np.int32)

    def _word_ids_of(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # scikit-learn's word analyzer without its per-call overhead: preprocess (lowercase), tokenize
        # (token_pattern), then the n-grams of each length, space-joined; unknown n-grams are looked up
        # as -1 and dropped afterwards, in one array operation
        get, missing = self.counter.vocabulary_.get, repeat(-1)
        lo, hi = (int(n) for n in self.params["ngram_range"])
        ids: list[int] = []
        ends = [0]
        for text in texts:
            toks = self._tokenize(self._preprocess(text))
            for n in range(lo, hi + 1):
                ids.extend(map(get, toks if n == 1 else map(" ".join, zip(*(toks[i:] for i in range(n)))), missing))
            ends.append(len(ids))
        every = np.asarray(ids, dtype=np.int64)
        known = every >= 0
        kept = np.zeros(len(every) + 1, dtype=np.int64)
        np.cumsum(known, out=kept[1:])
        return every[known].astype(np.int32), kept[np.asarray(ends, dtype=np.int64)]

    def counts(self, texts: list[str]) -> sp.csr_matrix:
        """Term counts, one row per text, duplicates not summed (as :meth:`ids`)."""
        indices, indptr = self.ids(texts)
        return sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(texts), len(self.terms)))


def _encode_terms(terms: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    raw = [t.encode("utf-8") for t in terms]
    offsets = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in raw], out=offsets[1:])
    data = np.frombuffer(b"".join(raw), dtype=np.uint8).copy()
    return torch.from_numpy(data), torch.from_numpy(offsets)


def _decode_terms(data: torch.Tensor, offsets: torch.Tensor, name: str) -> list[str]:
    if data.dtype != torch.uint8 or offsets.dtype != torch.int64 or data.ndim != 1 or offsets.ndim != 1:
        raise HeadLoadError(f"tfidf part {name!r}: vocabulary tensors must be 1-d uint8 bytes and int64 offsets")
    off = offsets.numpy()
    if len(off) < 2 or off[0] != 0 or off[-1] != len(data) or np.any(np.diff(off) <= 0):
        raise HeadLoadError(f"tfidf part {name!r}: vocabulary offsets do not match the bytes")
    blob = data.numpy().tobytes()
    try:
        return [blob[a:b].decode("utf-8") for a, b in zip(off[:-1].tolist(), off[1:].tolist())]
    except UnicodeDecodeError as exc:
        raise HeadLoadError(f"tfidf part {name!r}: vocabulary is not UTF-8 ({exc})") from None


class TfidfFeaturizer:
    """Word + char_wb TF-IDF features with a fixed vocabulary; see the module docstring."""

    def __init__(self, parts: list[_Part], lowercase: bool = True) -> None:
        self.parts = parts
        self.lowercase = lowercase
        #: every part's idf weights side by side, and the first column of each part
        self._idf = np.concatenate([p.idf for p in parts]) if parts else np.zeros(0)
        self._starts = np.cumsum([0] + [len(p.terms) for p in parts[:-1]]).astype(np.int64)
        #: every part reads the texts word by word (word 1-2-grams as arrays, char_wb): one split and one
        #: lookup per word for all parts (:mod:`embedclf.heads.wordpool`); otherwise each part on its own
        self._words: Words | None = None
        if parts and all(p._grams is not None or p.params["analyzer"] == "char_wb" for p in parts) and all(
                p.lowercase == lowercase for p in parts):
            self._words = Words([p._grams.tokens if p._grams is not None else p.word_columns for p in parts],
                                lowercase, WORD_CACHE_MAX)

    @classmethod
    def fit(cls, texts: Sequence[str], max_features: int | None = DEFAULT_MAX_FEATURES) -> TfidfFeaturizer:
        """Learn vocabulary and idf from ``texts``; at most ``max_features`` terms per analyzer (None: all)."""
        texts = list(texts)
        if not texts:
            raise ValueError("fitting TF-IDF features needs texts")
        if max_features is not None and max_features < 1:
            raise ValueError("max_features must be >= 1 or None")
        parts = []
        for name, vec in baseline_vectorizers(max_features):
            try:
                vec.fit(texts)
            except ValueError as exc:  # e.g. "empty vocabulary" (min_df too high for a tiny corpus)
                raise ValueError(f"tfidf part {name!r}: {exc}") from None
            terms = [""] * len(vec.vocabulary_)
            for term, i in vec.vocabulary_.items():
                terms[i] = term
            p = PARTS[name]
            params = {"analyzer": p["analyzer"], "ngram_range": list(p["ngram_range"]), "min_df": p["min_df"],
                      "max_features": max_features}
            parts.append(_Part(name, params, terms, vec.idf_, COMMON["lowercase"]))
        return cls(parts, COMMON["lowercase"])

    @property
    def n_features(self) -> int:
        return sum(len(p.terms) for p in self.parts)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Features of ``texts``: CSR float32 ``[len(texts), n_features]``; each part's rows have unit L2 norm."""
        texts = list(texts)
        indptr, indices, data = self._features(texts)
        return sp.csr_matrix((data.astype(np.float32), indices, indptr), shape=(len(texts), self.n_features))

    def _features(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR parts (indptr, indices, float64 data) of the features, all parts in one pass: each n-gram
        occurrence becomes the key ``row * n_features + column``, one sort counts them, then sublinear tf,
        idf and each part's L2 norm per row (what :class:`_Part` would do part by part, then ``hstack``)."""
        n, nf = len(texts), self.n_features
        rows_of, cols_of = self._occurrences(texts)
        # equal integer keys are identical, so every sort gives the same array (see sort_kind for which runs);
        # then the first key of each run of equal keys and the run's length (the n-gram's count in its text)
        every = sorted_keys(np.concatenate(rows_of), np.concatenate(cols_of), n, nf, keysort.sort_kind())
        first = np.ones(len(every), dtype=bool)
        np.not_equal(every[1:], every[:-1], out=first[1:])
        at = np.flatnonzero(first)
        counts = np.diff(at, append=len(every))
        uniq = every[at]
        rows = uniq // nf
        cols = uniq - rows * nf
        data = np.log(counts.astype(np.float64))
        data += 1.0  # sublinear tf
        data *= self._idf[cols]
        group = rows * len(self.parts)
        for s in self._starts[1:]:
            group += cols >= s
        norms = np.sqrt(np.bincount(group, weights=data * data, minlength=n * len(self.parts)))
        norms[norms == 0] = 1.0
        data /= norms[group]  # L2 per row and part (empty rows stay empty)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return indptr, cols.astype(np.int32), data

    def _occurrences(self, texts: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per part, the row and the column (int64) of every in-vocabulary n-gram occurrence of ``texts``."""
        n = len(texts)
        rows_of, cols_of = [], []
        if self._words is not None:
            counts, gathered = self._words.gather(texts)
            word_rows = np.repeat(np.arange(n, dtype=np.int64), counts)
            for p, start, (values, lengths) in zip(self.parts, self._starts, gathered):
                rows = np.repeat(word_rows, lengths)
                if p._grams is not None:  # the words' tokens -> their 1-2-grams' columns
                    cols, rows = p._grams.columns(values.astype(np.int64), rows)
                else:
                    cols = values.astype(np.int64)
                rows_of.append(rows)
                cols_of.append(cols + start)
            return rows_of, cols_of
        for p, start in zip(self.parts, self._starts):
            ids, indptr = p.ids(texts)
            rows_of.append(np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr)))
            cols_of.append(ids.astype(np.int64) + start)
        return rows_of, cols_of

    def config(self) -> dict:
        """JSON-able parameters and vocabulary sizes (the vocabulary itself is in :meth:`to_tensors`)."""
        return {
            "version": CONFIG_VERSION,
            "lowercase": self.lowercase,
            # a list, not an object: column order must survive JSON stores that reorder keys (sort_keys, JSONB)
            "parts": [{"name": p.name, **p.params, "n_terms": len(p.terms)} for p in self.parts],
        }

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """``{part}.vocab_bytes`` (uint8), ``{part}.vocab_offsets`` (int64), ``{part}.idf`` (float64) per part."""
        out: dict[str, torch.Tensor] = {}
        for p in self.parts:
            data, offsets = _encode_terms(p.terms)
            out[f"{p.name}.vocab_bytes"] = data
            out[f"{p.name}.vocab_offsets"] = offsets
            out[f"{p.name}.idf"] = torch.from_numpy(p.idf.copy())
        return out

    @staticmethod
    def tensor_names(config: dict) -> set[str]:
        """The tensor names a featurizer with ``config`` stores."""
        return {f"{p['name']}.{k}" for p in config.get("parts", []) for k in ("vocab_bytes", "vocab_offsets", "idf")}

    @classmethod
    def from_tensors(cls, config: dict, tensors: dict[str, torch.Tensor]) -> TfidfFeaturizer:
        """Rebuild from :meth:`config` + :meth:`to_tensors`; strict (a clear ValueError on any mismatch)."""
        if not isinstance(config, dict):
            raise HeadLoadError("tfidf config must be a JSON object")
        unknown = set(config) - _CONFIG_KEYS
        missing = _CONFIG_KEYS - set(config)
        if unknown or missing:
            raise HeadLoadError(f"tfidf config: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        if config["version"] != CONFIG_VERSION:
            raise HeadLoadError(f"unsupported tfidf config version {config['version']!r}")
        parts_cfg = config["parts"]
        if (not isinstance(parts_cfg, list) or not parts_cfg
                or not all(isinstance(p, dict) and isinstance(p.get("name"), str) for p in parts_cfg)):
            raise HeadLoadError("tfidf config: 'parts' must be a non-empty list of objects with a 'name'")
        if len({p["name"] for p in parts_cfg}) != len(parts_cfg):
            raise HeadLoadError("tfidf config: duplicate part names")
        want = cls.tensor_names(config)
        if set(tensors) != want:
            raise HeadLoadError(f"tfidf tensors: missing {sorted(want - set(tensors))}, "
                             f"unexpected {sorted(set(tensors) - want)}")
        parts = []
        for params in parts_cfg:
            name = params["name"]
            if set(params) != _PART_KEYS:
                got = sorted(params)
                raise HeadLoadError(f"tfidf part {name!r}: keys must be {sorted(_PART_KEYS)}, got {got}")
            if params["analyzer"] not in _ANALYZERS:
                raise HeadLoadError(f"tfidf part {name!r}: unknown analyzer {params['analyzer']!r}")
            ngr = params["ngram_range"]
            if not (isinstance(ngr, (list, tuple)) and len(ngr) == 2 and 1 <= ngr[0] <= ngr[1]):
                raise HeadLoadError(f"tfidf part {name!r}: bad ngram_range {ngr!r}")
            terms = _decode_terms(tensors[f"{name}.vocab_bytes"], tensors[f"{name}.vocab_offsets"], name)
            idf = tensors[f"{name}.idf"]
            if idf.dtype != torch.float64 or idf.ndim != 1:
                raise HeadLoadError(f"tfidf part {name!r}: idf must be a 1-d float64 tensor")
            if len(terms) != params["n_terms"]:
                raise HeadLoadError(f"tfidf part {name!r}: config says {params['n_terms']} terms, tensors hold "
                                 f"{len(terms)}")
            kept = {k: v for k, v in params.items() if k not in ("n_terms", "name")}
            parts.append(_Part(name, kept, terms, idf.numpy().copy(), bool(config["lowercase"])))
        return cls(parts, bool(config["lowercase"]))
