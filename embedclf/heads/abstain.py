"""When a loaded head abstains: what inference needs from the abstention rule. Pure (numpy).

The threshold and the out-of-scope label are chosen at training time (``embedclf.training.abstain``)
and stored in the head's config; applying them is all a worker does, so it lives here, with the heads.
A head with an out-of-scope score (``config.oos_score``, :mod:`embedclf.heads.oos`) applies its
threshold to the top probability times that score's discount, which needs the embeddings too
(:func:`head_abstain`); heads without one compare the top probability itself, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.heads.oos import discounted_confidence


def abstain_mask(proba: np.ndarray, threshold: float | None, oos_index: int | None = None,
                 discount: np.ndarray | None = None) -> np.ndarray:
    """True where the head abstains: top probability (times ``discount``, when given) below
    ``threshold``, or top label = the OOS label."""
    proba = np.asarray(proba)
    mask = np.zeros(len(proba), dtype=bool)
    if threshold is not None and threshold > 0:
        mask |= discounted_confidence(proba, discount) < threshold
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


def head_abstain_mask(config: HeadConfig, labels: Sequence[str], proba: np.ndarray,
                      discount: np.ndarray | None = None) -> np.ndarray:
    """Where a head abstains, from the threshold / OOS label stored in its config (none: never).

    ``discount``: the head's :meth:`~embedclf.heads.mlp.MLPHead.oos_discount` of the same rows; required
    when the config has an ``oos_score`` (use :func:`head_abstain`, which computes it)."""
    if config.oos_score is not None and discount is None and config.abstain_threshold:
        raise ValueError("this head abstains on an out-of-scope score: pass its discount (see head_abstain)")
    return abstain_mask(proba, config.abstain_threshold, labels_oos_index(labels, config.oos_label), discount)


def head_abstain(head: MLPHead, labels: Sequence[str], x: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Where ``head`` abstains on raw embeddings ``x`` whose probabilities are ``proba``."""
    return head_abstain_mask(head.config, labels, proba, head.oos_discount(x))
