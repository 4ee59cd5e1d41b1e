"""The skeptic's baseline: TF-IDF (word 1-2 grams + char_wb 2-5 grams) + a linear model.

Every evaluation trains it on exactly the same training texts as the head and
scores it on the same test texts, so the comparison is honest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import FeatureUnion, make_pipeline

from embedclf.heads.tfidf import baseline_vectorizers
from embedclf.training.metrics import classification_report


def tfidf_baseline(
    train_texts: Sequence[str],
    train_y: np.ndarray,
    test_texts: Sequence[str],
    test_y: np.ndarray,
    num_labels: int,
    seed: int = 0,
) -> dict[str, float]:
    """Fit on the training split, report on the test split (same keys as the head)."""
    start = time.perf_counter()
    features = FeatureUnion(baseline_vectorizers())  # the features a hybrid head's sparse member uses too
    clf = SGDClassifier(loss="modified_huber", alpha=1e-4, max_iter=50, tol=None, random_state=seed, n_jobs=-1)
    model = make_pipeline(features, clf)
    model.fit(list(train_texts), train_y)
    proba = np.zeros((len(test_texts), num_labels), dtype=np.float64)
    # classes_ may miss labels absent from training; place columns by class index
    proba[:, model.classes_] = model.predict_proba(list(test_texts))
    report = classification_report(proba, np.asarray(test_y))
    report["seconds"] = time.perf_counter() - start
    return report
