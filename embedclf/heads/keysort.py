"""A batch's n-gram keys (``row * n_cols + col``) in ascending order, by the sort this CPU runs fastest. Pure.

Used by :mod:`embedclf.heads.tfidf` to count each text's n-grams: equal integer keys are
indistinguishable, so every sort gives the same array and the choice changes the time only.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import numpy as np

SortKind = Literal["quicksort", "stable", "radix"]
_sort_kind: SortKind | None = None


def sort_kind() -> SortKind:
    """The fastest way to sort a batch's n-gram keys on this CPU (timed once per process, ~15 ms).

    Integer keys sort to the same array every way, so this changes the time only. Hosts disagree: on an
    AVX2 AMD EPYC, numpy's default (vectorised quicksort) sorted 43,000 keys in 0.34 ms against 1.0 ms for
    ``stable`` (radix/timsort); on an AVX-512 AMD EPYC (Zen 4; likely its slow compress-stores, not profiled) it
    took 1.57 ms against 0.91, and ``radix`` (:func:`sorted_keys`: two radix sorts of 16-bit columns and
    8-bit rows) 0.45. Timed on keys shaped like a batch's: 256 rows of ~190 columns below 40,000."""
    global _sort_kind
    if _sort_kind is None:
        from embedclf.heads.nearest import best_times

        rng = np.random.default_rng(0)
        rows = np.repeat(np.arange(256, dtype=np.int64), 190)
        cols = rng.integers(0, 40_000, len(rows))
        kinds: tuple[SortKind, ...] = ("quicksort", "stable", "radix")
        times = best_times([partial(sorted_keys, rows, cols, 256, 40_000, k) for k in kinds], reps=5)
        _sort_kind = kinds[int(np.argmin(times))]
    return _sort_kind


#: ``radix`` sorts columns and rows as 16-bit integers: up to this many of each
RADIX_MAX = 1 << 16


def sorted_keys(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int, kind: SortKind) -> np.ndarray:
    """The keys ``rows * n_cols + cols`` (int64), ascending. ``radix``: a stable radix argsort by column, then one
    by row, where both fit in 16 bits (numpy sorts 8- and 16-bit integers by radix); otherwise, and for the
    other kinds, numpy's sort of the keys (``stable`` in place of ``radix``)."""
    keys = rows * n_cols + cols
    if kind == "radix" and n_cols <= RADIX_MAX and n_rows <= RADIX_MAX:
        by_col = np.argsort(cols.astype(np.uint16), kind="stable")
        row_type = np.uint8 if n_rows <= 256 else np.uint16
        by_row = np.argsort(rows.astype(row_type)[by_col], kind="stable")
        return keys[by_col[by_row]]
    keys.sort(kind="stable" if kind == "radix" else kind)
    return keys
