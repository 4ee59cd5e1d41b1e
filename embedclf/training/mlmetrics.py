"""Multi-label metrics and per-label threshold selection. Pure (numpy).

``Y`` is a boolean / 0-1 matrix ``[n, L]`` of true labels, ``P`` the same shape of
predictions. Conventions (the same as scikit-learn with ``zero_division=0`` for F1):

* macro-F1 averages every label's F1; a label with no true and no predicted positive
  scores 0 (scikit-learn's default), so score on a split where every label occurs.
* micro-F1 pools the counts of all labels.
* samples Jaccard averages ``|true ∩ pred| / |true ∪ pred|`` over texts; a text with
  an empty true set and an empty prediction scores 1 (scikit-learn ``zero_division=1``).

Threshold rule (:func:`choose_thresholds`): for each label the threshold maximising its
F1 on the validation texts (midway between the two probabilities where the best cut
falls). **Fallback**: a label with fewer than ``min_positives`` positive validation
texts, or whose best F1 there is 0, gets the *global* threshold instead: the single
threshold (grid 0.01..0.99) maximising macro-F1 over all labels on validation. Picking
a cut from a handful of positives fits noise; one shared threshold is steadier.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: a label needs this many positive validation texts for a threshold of its own
DEFAULT_MIN_POSITIVES = 10
GLOBAL_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


def multi_hot(label_sets: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """Boolean ``[n, L]`` with ``True`` where text i has label j; unknown labels raise."""
    index = {label: j for j, label in enumerate(labels)}
    Y = np.zeros((len(label_sets), len(labels)), dtype=bool)
    for i, s in enumerate(label_sets):
        for label in s:
            if label not in index:
                raise ValueError(f"label {label!r} is not one of the head's labels")
            Y[i, index[label]] = True
    return Y


def counts(Y: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label true positives, false positives, false negatives."""
    Y, P = np.asarray(Y, dtype=bool), np.asarray(P, dtype=bool)
    if Y.shape != P.shape:
        raise ValueError(f"shapes differ: {Y.shape} vs {P.shape}")
    tp = (Y & P).sum(0)
    return tp, (~Y & P).sum(0), (Y & ~P).sum(0)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def per_label_f1(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    return _f1(*counts(Y, P)).astype(float)


def macro_f1(Y: np.ndarray, P: np.ndarray) -> float:
    return float(per_label_f1(Y, P).mean())


def micro_f1(Y: np.ndarray, P: np.ndarray) -> float:
    tp, fp, fn = (int(v.sum()) for v in counts(Y, P))
    return float(_f1(np.asarray(tp), np.asarray(fp), np.asarray(fn)))


def samples_jaccard(Y: np.ndarray, P: np.ndarray) -> float:
    Y, P = np.asarray(Y, dtype=bool), np.asarray(P, dtype=bool)
    inter, union = (Y & P).sum(1), (Y | P).sum(1)
    return float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean()) if len(Y) else float("nan")


def report(Y: np.ndarray, P: np.ndarray, labels: Sequence[str], thresholds: np.ndarray | None = None) -> dict:
    """The multi-label figures: averages, cardinalities, and one row per label."""
    Y, P = np.asarray(Y, dtype=bool), np.asarray(P, dtype=bool)
    tp, fp, fn = counts(Y, P)
    prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    rec = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    f1 = _f1(tp, fp, fn)
    rows = [{"label": label, "precision": float(prec[j]), "recall": float(rec[j]), "f1": float(f1[j]),
             "support": int(Y[:, j].sum()), "predicted": int(P[:, j].sum()),
             **({} if thresholds is None else {"threshold": float(thresholds[j])})}
            for j, label in enumerate(labels)]
    return {
        "macro_f1": float(f1.mean()),
        "micro_f1": micro_f1(Y, P),
        "samples_jaccard": samples_jaccard(Y, P),
        "macro_precision": float(prec.mean()),
        "macro_recall": float(rec.mean()),
        "exact_match": float((Y == P).all(1).mean()),
        "cardinality_true": float(Y.sum(1).mean()),
        "cardinality_pred": float(P.sum(1).mean()),
        "no_label_share": float((~P.any(1)).mean()),
        "per_label": rows,
    }


def best_label_threshold(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) of the cut maximising one label's F1; (0.5, 0.0) without positives.

    Cuts are only placed between distinct probabilities, midway, so the chosen
    threshold reproduces the counts it was chosen for.
    """
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    if n_pos == 0 or len(p) == 0:
        return 0.5, 0.0
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)
    k = np.arange(1, len(p) + 1)
    f1 = 2 * tp / (k + n_pos)
    # a cut after position k-1 is realisable only where the next probability is lower
    valid = np.append(ps[:-1] > ps[1:], True)
    f1 = np.where(valid, f1, -1.0)
    best = int(np.argmax(f1))
    threshold = ps[best] if best == len(p) - 1 else (ps[best] + ps[best + 1]) / 2
    return float(threshold), float(f1[best])


def global_threshold(proba: np.ndarray, Y: np.ndarray, grid: np.ndarray = GLOBAL_GRID) -> tuple[float, float]:
    """(threshold, macro-F1) of the one threshold for every label that maximises macro-F1."""
    scores = [macro_f1(Y, proba >= t) for t in grid]
    best = int(np.argmax(scores))
    return float(grid[best]), float(scores[best])


def choose_thresholds(proba: np.ndarray, Y: np.ndarray,
                      min_positives: int = DEFAULT_MIN_POSITIVES) -> tuple[np.ndarray, dict]:
    """Per-label thresholds chosen on validation (see the module docstring for the fallback).

    Returns the thresholds and a summary: the global threshold, which labels fell back and why.
    """
    proba, Y = np.asarray(proba, dtype=np.float64), np.asarray(Y, dtype=bool)
    g, g_f1 = global_threshold(proba, Y)
    out = np.full(Y.shape[1], g, dtype=np.float64)
    fallback: dict[int, str] = {}
    for j in range(Y.shape[1]):
        n_pos = int(Y[:, j].sum())
        if n_pos < min_positives:
            fallback[j] = f"{n_pos} validation positives < {min_positives}"
            continue
        t, f1 = best_label_threshold(proba[:, j], Y[:, j])
        if f1 <= 0.0:
            fallback[j] = "F1 0 at every cut"
            continue
        out[j] = t
    info = {"global_threshold": g, "global_val_macro_f1": g_f1, "min_positives": min_positives,
            "fallback": {int(j): why for j, why in fallback.items()}}
    return out, info
