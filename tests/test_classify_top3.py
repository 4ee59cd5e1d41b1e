"""The rows' top-3: the best labels in order, ties to the lower index, scores rounded (embedclf/classify.py)."""

from __future__ import annotations

import numpy as np
import pytest

from embedclf.classify import _top_dicts, _top_k


@pytest.mark.parametrize("n_labels", [2, 3, 77])
def test_top_k_rows_are_the_best_labels_in_order(n_labels):
    rng = np.random.default_rng(n_labels)
    proba = rng.random((50, n_labels)).astype(np.float32)
    proba[::4] = np.round(proba[::4], 1)  # ties: the lower index first
    labels = [f"l{i}" for i in range(n_labels)]
    idx, best, rounded = _top_k(proba, 3)
    tops = _top_dicts(labels, idx, rounded)
    for p, top, b in zip(proba, tops, best):
        order = sorted(range(n_labels), key=lambda j: (-p[j], j))[:3]
        assert [d["label"] for d in top] == [labels[j] for j in order]
        assert [d["score"] for d in top] == [round(float(p[j]), 6) for j in order]
        assert b == float(p[order[0]])
