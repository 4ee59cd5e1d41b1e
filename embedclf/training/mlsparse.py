"""The sparse member of a multi-label head: one-vs-rest logistic regression over TF-IDF features. Pure.

The features are :class:`~embedclf.heads.tfidf.TfidfFeaturizer`'s (the baseline's word 1-2 +
char_wb 2-5 grams, vocabulary capped per analyzer). Each label gets a liblinear logistic
regression with the head's class weighting (positives weigh ``pos_weight[j]``); the
coefficients go into the head's ``sparse`` Linear layer (safetensors, no pickle).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from embedclf.heads.multilabel import MultiLabelHead
from embedclf.heads.tfidf import TfidfFeaturizer


def fit_featurizer(texts: Sequence[str], max_features: int) -> TfidfFeaturizer:
    return TfidfFeaturizer.fit(list(texts), max_features=max_features)


def fit_sparse(head: MultiLabelHead, featurizer: TfidfFeaturizer, texts: Sequence[str], Y: np.ndarray,
               pos_weight: np.ndarray, c: float) -> dict:
    """Fit ``head.sparse`` on ``texts`` (multi-hot ``Y``) and attach ``featurizer``; returns a summary."""
    from sklearn.linear_model import LogisticRegression

    if head.sparse is None:
        raise ValueError("this head has no sparse member")
    if not c > 0:
        raise ValueError(f"sparse_c must be > 0, got {c}")
    feats = featurizer.transform(list(texts))
    if feats.shape[1] != head.sparse.in_features:
        raise ValueError("featurizer and sparse member sizes differ")
    Y = np.asarray(Y, dtype=bool)
    W = np.zeros((Y.shape[1], feats.shape[1]), dtype=np.float32)
    b = np.zeros(Y.shape[1], dtype=np.float32)
    constant = []
    for j in range(Y.shape[1]):
        y = Y[:, j]
        if y.all() or not y.any():  # nothing to separate: a constant, confident answer
            b[j] = 8.0 if y.all() else -8.0
            constant.append(j)
            continue
        clf = LogisticRegression(C=c, solver="liblinear", class_weight={0: 1.0, 1: float(pos_weight[j])})
        clf.fit(feats, y.astype(int))
        W[j] = clf.coef_[0]
        b[j] = clf.intercept_[0]
    with torch.no_grad():
        head.sparse.weight.copy_(torch.from_numpy(W))
        head.sparse.bias.copy_(torch.from_numpy(b))
    head.featurizer = featurizer
    return {"n_features": int(feats.shape[1]), "constant_labels": constant}
