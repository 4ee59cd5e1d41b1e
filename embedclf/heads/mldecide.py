"""Decisions of a multi-label head from its probabilities: numpy only (the worker's row fields).

Kept apart from :mod:`embedclf.heads.multilabel` (torch) so code that only turns
probabilities into result rows does not import a model library.
"""

from __future__ import annotations

import numpy as np

#: the ``head_type`` a multi-label head's config carries
HEAD_TYPE = "multi_label"


def is_multi_label(config_or_module: object) -> bool:
    """True for a multi-label config, or a module built from one."""
    config = getattr(config_or_module, "config", config_or_module)
    return getattr(config, "head_type", None) == HEAD_TYPE


def decide(proba: np.ndarray, thresholds: np.ndarray, min_labels: int = 0, max_labels: int = 0) -> np.ndarray:
    """Boolean ``[n, L]``: ``proba >= thresholds`` per label.

    ``max_labels`` > 0 keeps at most that many of them per text (the most probable); ``min_labels``
    > 0 adds the most probable labels of a text that has fewer over their thresholds (so a text is
    never left without a label when ``min_labels`` is 1). 0 and 0 (the defaults, and every head
    stored before these rules existed) is the plain per-label rule.
    """
    proba = np.asarray(proba)
    on = proba >= np.asarray(thresholds)[None, :]
    if (min_labels or max_labels) and proba.size:
        rank = np.empty_like(proba, dtype=np.int64)  # 0 = the text's most probable label
        order = np.argsort(-proba, axis=1, kind="stable")
        np.put_along_axis(rank, order, np.arange(proba.shape[1])[None, :].repeat(len(proba), 0), axis=1)
        if max_labels:
            on &= rank < max_labels
        if min_labels:
            on |= rank < min_labels
    return on


def label_rows(proba: np.ndarray, labels: list[str], thresholds: np.ndarray, k: int = 3, *,
               min_labels: int = 0, max_labels: int = 0) -> list[dict]:
    """Per text, the result fields of a multi-label head.

    ``labels``: every label over its threshold with its probability, highest first;
    ``label``/``score``: the first of those; ``abstained`` when there is none (then
    ``label`` is None and ``score`` is the top probability); ``top3``: the ``k`` most
    probable labels whatever their thresholds.
    """
    proba = np.asarray(proba, dtype=np.float64)
    on = decide(proba, thresholds, min_labels, max_labels)
    order = np.argsort(-proba, axis=1, kind="stable")
    out = []
    for i, row in enumerate(order):
        chosen = [j for j in row if on[i, j]]
        top = row[: min(k, len(row))]
        out.append({
            "label": labels[chosen[0]] if chosen else None,
            "score": float(proba[i, chosen[0] if chosen else row[0]]),
            "abstained": not chosen,
            "labels": [{"label": labels[j], "score": round(float(proba[i, j]), 6)} for j in chosen],
            "top3": [{"label": labels[j], "score": round(float(proba[i, j]), 6)} for j in top],
        })
    return out
