"""The vocabulary ids of texts' word 1- and 2-grams, looked up as arrays. Pure.

Exactly what scikit-learn's ``word`` analyzer counts with its default token pattern (runs of two or
more word characters), for n-grams of one and/or two tokens: the TF-IDF member's word part.

A token is a run of word characters, and no whitespace character is a word character (true of all of
Unicode: ``tests/heads/test_wordgrams.py``), so the tokens of a text are those of its
whitespace-separated words, in order. Each distinct word is therefore tokenized once (cached, bounded),
and its tokens are kept as small integers: the index of the token among the tokens of the vocabulary's
terms, or one shared *unknown* index for any other token (no vocabulary term contains it). A batch is
then a few array operations: a token's unigram column by indexing, a pair of neighbouring tokens' bigram
column by a binary search among the vocabulary's bigrams, which are keyed by their two token indices.
Per text, only splitting it and a dict lookup per word run in Python (the previous path tokenized every
text with a regular expression and joined and looked up every pair of tokens as a string).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

#: distinct words whose token indices (here), char_wb columns (heads/tfidf.py) or both (heads/wordpool.py) are kept
#: (then it starts over)
WORD_CACHE_MAX = 200_000


class WordGrams:
    """Word 1-/2-gram columns of a fixed vocabulary (scikit-learn's ``vocabulary_``: term -> column)."""

    def __init__(self, vocabulary: Mapping[str, int], ngram_range: Sequence[int], lowercase: bool,
                 tokenize: Callable[[str], list[str]]) -> None:
        lo, hi = (int(n) for n in ngram_range)
        if not 1 <= lo <= hi <= 2:
            raise ValueError(f"WordGrams counts n-grams of 1 or 2 tokens, not {lo}-{hi}")
        self.lo, self.hi, self.lowercase, self.tokenize = lo, hi, lowercase, tokenize
        self.index: dict[str, int] = {}  # token -> its index among the vocabulary's tokens
        unigrams: dict[int, int] = {}
        bigrams: dict[int, int] = {}
        for term, col in vocabulary.items():
            toks = term.split(" ")
            if len(toks) > 2 or not all(toks):
                raise ValueError(f"not a word 1- or 2-gram: {term!r}")
            ids = [self.index.setdefault(t, len(self.index)) for t in toks]
            if len(ids) == 1:
                unigrams[ids[0]] = col
            else:
                bigrams[ids[0] * _SPAN + ids[1]] = col
        #: the index of every token that is not in the vocabulary's terms
        self.unknown = len(self.index)
        if self.unknown >= _SPAN:
            raise ValueError("too many distinct tokens in the vocabulary")
        self._unigram = np.full(self.unknown + 1, -1, dtype=np.int64)
        for t, col in unigrams.items():
            self._unigram[t] = col
        keys = np.fromiter(bigrams, dtype=np.int64, count=len(bigrams))
        order = np.argsort(keys)
        self._pair_keys = keys[order]
        self._pair_cols = np.fromiter(bigrams.values(), dtype=np.int64, count=len(bigrams))[order]
        self._words: dict[str, tuple[int, ...]] = {}

    def tokens(self, word: str) -> tuple[int, ...]:
        """A whitespace-free word's tokens as indices (the unknown index for a token no term contains)."""
        index, unknown = self.index, self.unknown
        return tuple(index.get(t, unknown) for t in self.tokenize(word))

    def _tokens_of(self, word: str) -> tuple[int, ...]:
        toks = self._words[word] = self.tokens(word)
        return toks

    def ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every in-vocabulary n-gram's column (int32), text after text (a text's unigrams, then its bigrams),
        and where each text's run starts (``indptr``, ``len(texts) + 1`` entries, int64)."""
        words, tokens_of = self._words, self._tokens_of
        if len(words) > WORD_CACHE_MAX:
            words.clear()
        flat: list[int] = []
        ends = [0]
        for text in texts:
            for word in (text.lower() if self.lowercase else text).split():
                cached = words.get(word)
                flat += tokens_of(word) if cached is None else cached
            ends.append(len(flat))
        n = len(texts)
        toks = np.asarray(flat, dtype=np.int64)
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(np.asarray(ends, dtype=np.int64)).astype(np.int64))
        col, row = self.columns(toks, rows)
        # each piece is in text order already: a stable sort by text merges them (two sorted runs)
        order = np.argsort(row, kind="stable")
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=n), out=indptr[1:])
        return col[order].astype(np.int32), indptr

    def columns(self, toks: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The in-vocabulary n-grams of a batch's tokens ``toks`` (int64 indices, text after text) whose texts
        are ``rows`` (non-decreasing): their columns and rows (int64; the unigrams, then the bigrams)."""
        cols, at = [], []
        if self.lo == 1:
            uni = self._unigram[toks]
            known = uni >= 0
            cols.append(uni[known])
            at.append(rows[known])
        if self.hi == 2 and len(toks) > 1 and len(self._pair_keys):
            keys = toks[:-1] * _SPAN + toks[1:]
            pos = np.minimum(np.searchsorted(self._pair_keys, keys), len(self._pair_keys) - 1)
            hit = (self._pair_keys[pos] == keys) & (rows[1:] == rows[:-1])  # both tokens in one text
            cols.append(self._pair_cols[pos[hit]])
            at.append(rows[1:][hit])
        if not cols:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(cols), np.concatenate(at)


#: bigram keys are ``first * _SPAN + second`` (token indices below it)
_SPAN = 1 << 31
