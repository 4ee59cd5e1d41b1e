"""The skeptic's multi-label baseline: TF-IDF + one-vs-rest logistic regression, one global threshold.

Same features as the single-label baseline (:func:`embedclf.heads.tfidf.baseline_vectorizers`: word
1-2 grams + char_wb 2-5 grams, sublinear tf, no vocabulary cap).
One threshold shared by every label is chosen on the validation texts (macro-F1), never on test.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from embedclf.training import mlmetrics

#: inverse L2 strength of each label's logistic regression (not tuned on any test split)
BASELINE_C = 10.0


def tfidf_ovr(train_texts: Sequence[str], Y_train: np.ndarray, val_texts: Sequence[str], Y_val: np.ndarray,
              test_texts: Sequence[str], Y_test: np.ndarray, labels: Sequence[str]) -> dict:
    """Fit on train, choose the global threshold on val, report on test (``mlmetrics.report`` keys)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import FeatureUnion, make_pipeline

    from embedclf.heads.tfidf import baseline_vectorizers

    start = time.perf_counter()
    features = FeatureUnion(baseline_vectorizers())
    Y_train = np.asarray(Y_train, dtype=bool)
    clf = OneVsRestClassifier(LogisticRegression(C=BASELINE_C, solver="liblinear"))
    model = make_pipeline(features, clf)
    # a label without positives in training cannot be fitted: it is never predicted
    fit_cols = np.flatnonzero(Y_train.any(0) & ~Y_train.all(0))
    model.fit(list(train_texts), Y_train[:, fit_cols].astype(int))

    def proba(texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(labels)))
        out[:, fit_cols] = model.predict_proba(list(texts))
        return out

    threshold, val_f1 = mlmetrics.global_threshold(proba(val_texts), np.asarray(Y_val, dtype=bool))
    thresholds = np.full(len(labels), threshold)
    rep = mlmetrics.report(Y_test, proba(test_texts) >= threshold, labels, thresholds)
    rep.update(threshold=threshold, val_macro_f1=val_f1, seconds=time.perf_counter() - start)
    return rep
