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


def decide(proba: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Boolean ``[n, L]``: ``proba >= thresholds`` per label."""
    return np.asarray(proba) >= np.asarray(thresholds)[None, :]


def label_rows(proba: np.ndarray, labels: list[str], thresholds: np.ndarray, k: int = 3) -> list[dict]:
    """Per text, the result fields of a multi-label head.

    ``labels``: every label over its threshold with its probability, highest first;
    ``label``/``score``: the first of those; ``abstained`` when there is none (then
    ``label`` is None and ``score`` is the top probability); ``top3``: the ``k`` most
    probable labels whatever their thresholds.
    """
    proba = np.asarray(proba, dtype=np.float64)
    on = decide(proba, thresholds)
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
