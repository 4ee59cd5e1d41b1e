"""When a loaded head abstains: what inference needs from the abstention rule. Pure (numpy).

The threshold and the out-of-scope label are chosen at training time (``embedclf.training.abstain``)
and stored in the head's config; applying them is all a worker does, so it lives here, with the heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedclf.heads.mlp import HeadConfig


def abstain_mask(proba: np.ndarray, threshold: float | None, oos_index: int | None = None) -> np.ndarray:
    """True where the head abstains: top probability below ``threshold`` or top label = the OOS label."""
    proba = np.asarray(proba)
    mask = np.zeros(len(proba), dtype=bool)
    if threshold is not None and threshold > 0:
        mask |= proba.max(axis=1) < threshold
    if oos_index is not None:
        mask |= proba.argmax(axis=1) == oos_index
    return mask


def labels_oos_index(labels: Sequence[str], oos_label: str | None) -> int | None:
    """Index of the out-of-scope label in ``labels`` (None when the head has none)."""
    if oos_label is None:
        return None
    try:
        return list(labels).index(oos_label)
    except ValueError:
        return None


def head_abstain_mask(config: HeadConfig, labels: Sequence[str], proba: np.ndarray) -> np.ndarray:
    """Where a head abstains, from the threshold / OOS label stored in its config (none: never)."""
    return abstain_mask(proba, config.abstain_threshold, labels_oos_index(labels, config.oos_label))
