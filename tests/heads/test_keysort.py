"""sorted_keys: every sort kind gives a batch's n-gram keys in ascending order."""

from __future__ import annotations

import numpy as np
import pytest

from embedclf.heads.keysort import sorted_keys


@pytest.mark.parametrize("n_rows,n_cols", [(0, 10), (1, 1), (256, 40_000), (257, 65_536), (70_000, 5),
                                           (3, 65_537), (300, 200_000)])
def test_sorted_keys_every_kind_and_size(n_rows, n_cols):
    """``radix`` sorts 8-bit rows (up to 256), 16-bit rows and columns (up to 65,536), and falls back to numpy's
    sort of the int64 keys beyond: always the keys in ascending order, duplicates kept."""
    rng = np.random.default_rng(n_rows + n_cols)
    size = 0 if n_rows == 0 else 5_000
    rows = np.sort(rng.integers(0, max(n_rows, 1), size)).astype(np.int64)
    cols = rng.integers(0, n_cols, size).astype(np.int64)
    if size:
        cols[: size // 10] = cols[0]  # repeated keys
    expected = np.sort(rows * n_cols + cols)
    for kind in ("quicksort", "stable", "radix"):
        got = sorted_keys(rows.copy(), cols.copy(), n_rows, n_cols, kind)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)
    # rows given in any order (each part's rows run from 0 again)
    shuffled = rng.permutation(size)
    np.testing.assert_array_equal(sorted_keys(rows[shuffled], cols[shuffled], n_rows, n_cols, "radix"), expected)
