"""LabelEncoder and stratified_split."""

from __future__ import annotations

import numpy as np
import pytest

from embedclf.training.split import LabelEncoder, stratified_split


def test_label_encoder_sorted_and_roundtrip():
    enc = LabelEncoder.fit(["b", "a", "c", "a"])
    assert enc.labels == ("a", "b", "c")
    codes = enc.encode(["c", "a", "b", "a"])
    assert codes.dtype == np.int64
    assert [enc.labels[i] for i in codes] == ["c", "a", "b", "a"]


def test_label_encoder_needs_two_labels():
    with pytest.raises(ValueError, match="2"):
        LabelEncoder.fit(["only", "only"])


def test_label_encoder_unknown_labels_named():
    enc = LabelEncoder.fit(["a", "b"])
    with pytest.raises(ValueError, match="'zzz'"):
        enc.encode(["a", "zzz"])


def make_y(counts: dict[int, int], seed: int = 0) -> np.ndarray:
    y = np.concatenate([np.full(n, c) for c, n in counts.items()])
    return np.random.default_rng(seed).permutation(y)


COUNTS = {0: 100, 1: 40, 2: 7, 3: 2, 4: 1}


def test_split_is_disjoint_and_covering():
    y = make_y(COUNTS)
    keep, held = stratified_split(y, 0.2, seed=3)
    assert len(np.intersect1d(keep, held)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([keep, held])), np.arange(len(y)))
    assert np.all(np.diff(keep) > 0) and np.all(np.diff(held) > 0)  # sorted, unique


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_split_is_stratified_per_class(fraction):
    y = make_y(COUNTS)
    keep, held = stratified_split(y, fraction, seed=1)
    for c, n in COUNTS.items():
        n_held = int((y[held] == c).sum())
        n_keep = int((y[keep] == c).sum())
        assert n_held + n_keep == n
        assert n_keep >= 1, f"class {c} lost from the training side"
        if n >= 2:
            assert n_held >= 1, f"class {c} with {n} examples is never evaluated"
        else:
            assert n_held == 0
        if n >= 10:
            assert abs(n_held - n * fraction) <= 1


def test_every_class_kept_even_with_large_fraction():
    y = make_y({0: 3, 1: 2, 2: 1, 3: 50})
    keep, _held = stratified_split(y, 0.9, seed=0)
    assert set(np.unique(y[keep])) == {0, 1, 2, 3}


def test_split_deterministic_by_seed():
    y = make_y(COUNTS)
    a = stratified_split(y, 0.3, seed=11)
    b = stratified_split(y, 0.3, seed=11)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = stratified_split(y, 0.3, seed=12)
    assert not np.array_equal(a[1], c[1])


def test_split_works_on_string_labels():
    y = np.array(["x"] * 10 + ["y"] * 10)
    keep, held = stratified_split(y, 0.2)
    assert sorted(y[held].tolist()) == ["x", "x", "y", "y"]
    assert len(keep) == 16


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 1.5])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(np.array([0, 0, 1, 1]), fraction)
