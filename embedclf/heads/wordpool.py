"""A batch's words looked up once each, and what each part keeps per word gathered as arrays. Pure.

The TF-IDF member's parts read a text as its whitespace-separated words (lowercased, when they
lowercase): the word part's tokens never cross a word (no whitespace character is a word character,
:mod:`embedclf.heads.wordgrams`) and char_wb n-grams are taken word by word. So a batch is split into
words once for every part; each distinct word gets a small integer (a dict lookup), a word seen for the
first time is encoded by every part once, and each part's values for the whole batch are gathered from
its :class:`Pool` (every word's values end to end) in a few array operations. Per text, only the split
and one lookup per word run in Python (before, each part looped over the words itself and concatenated
one small array per word).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np


class Pool:
    """Variable-length int32 values per word index, end to end in one growing array. Append-only."""

    def __init__(self) -> None:
        self._data = np.zeros(4096, dtype=np.int32)
        self._size = 0
        self._starts = np.zeros(1024, dtype=np.int64)
        self._lengths = np.zeros(1024, dtype=np.int64)
        self.n = 0

    def append(self, values: Sequence[int] | np.ndarray) -> None:
        """The values of the next word index (``n``)."""
        v = np.asarray(values, dtype=np.int32)
        if self._size + len(v) > len(self._data):
            self._data = _grown(self._data, self._size + len(v))
        if self.n == len(self._starts):
            self._starts, self._lengths = _grown(self._starts, self.n + 1), _grown(self._lengths, self.n + 1)
        self._data[self._size:self._size + len(v)] = v
        self._starts[self.n], self._lengths[self.n] = self._size, len(v)
        self._size += len(v)
        self.n += 1

    def gather(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The values of words ``keys`` (int64 indices below ``n``), word after word, and each word's count."""
        lengths = self._lengths[keys]
        ends = np.cumsum(lengths)
        total = int(ends[-1]) if len(ends) else 0
        # output position j of word i reads data[starts[i] + j - (ends[i] - lengths[i])]
        shift = np.repeat(self._starts[keys] - (ends - lengths), lengths)
        shift += np.arange(total, dtype=np.int64)
        return self._data[shift], lengths


def _grown(a: np.ndarray, need: int) -> np.ndarray:
    out = np.zeros(max(need, 2 * len(a)), dtype=a.dtype)
    out[:len(a)] = a
    return out


class Words:
    """Distinct words -> indices, with one :class:`Pool` per encoder (``encoders[i](word)``: part ``i``'s values
    of a word). Bounded: when more than ``limit`` words are held, the next batch starts over. Thread-safe (one
    lock around a batch's lookups and gathers: the text pool may run one head in several threads)."""

    def __init__(self, encoders: Sequence[Callable[[str], Sequence[int] | np.ndarray]], lowercase: bool,
                 limit: int) -> None:
        self.encoders, self.lowercase, self.limit = list(encoders), lowercase, limit
        self._lock = threading.Lock()
        self._reset()

    def __getstate__(self) -> dict:
        """A copy (``copy.deepcopy`` of a head) gets its own lock."""
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _reset(self) -> None:
        self.index: dict[str, int] = {}
        self.pools = [Pool() for _ in self.encoders]

    def gather(self, texts: Sequence[str]) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """Each text's number of words (int64), and per encoder: the values of every word of ``texts``, text
        after text, and each word's count of values (as :meth:`Pool.gather`)."""
        words: list[str] = []
        counts = []
        lower = self.lowercase
        for text in texts:
            w = (text.lower() if lower else text).split()
            words += w
            counts.append(len(w))
        with self._lock:
            if len(self.index) > self.limit:
                self._reset()
            index = self.index
            keys = list(map(index.get, words))
            if None in keys:
                for i, k in enumerate(keys):
                    if k is None:
                        keys[i] = index.get(words[i])
                        if keys[i] is None:
                            keys[i] = self._add(words[i])
            at = np.array(keys, dtype=np.int64)
            return np.array(counts, dtype=np.int64), [pool.gather(at) for pool in self.pools]

    def _add(self, word: str) -> int:
        values = [encode(word) for encode in self.encoders]  # all of them first: the pools stay in step
        for pool, v in zip(self.pools, values):
            pool.append(v)
        k = self.index[word] = len(self.index)
        return k
