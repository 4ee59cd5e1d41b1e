"""Training the TF-IDF member of a hybrid head, and the members' mixing weights. Pure (numpy, sklearn, torch).

The sparse member is a linear model over :class:`~embedclf.heads.tfidf.TfidfFeaturizer`
features: scikit-learn's ``SGDClassifier`` with the logistic loss (one-vs-rest,
deterministic for a seed). It trains in seconds on 10k texts where a full multinomial
L-BFGS fit takes several times longer, and its validation accuracy and calibrated
log-loss were measured within noise of it on BANKING77. Its decision values are the
member's logits; like every member it gets its own temperature on validation.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from embedclf.errors import DataError
from embedclf.heads.mlp import MLPHead
from embedclf.heads.tfidf import TfidfFeaturizer

#: grid step of the mixing weights (weights are multiples of it, summing to 1)
WEIGHT_STEP = 0.05


def fit_featurizer(texts: Sequence[str], max_features: int | None) -> TfidfFeaturizer:
    return TfidfFeaturizer.fit(texts, max_features=max_features)


def fit_sparse_member(head: MLPHead, featurizer: TfidfFeaturizer, texts: Sequence[str], y: np.ndarray,
                      alpha: float, epochs: int, seed: int) -> dict:
    """Fit ``head.sparse`` on ``texts`` with class indices ``y``; attaches ``featurizer``. Returns facts."""
    from sklearn.linear_model import SGDClassifier

    if head.sparse is None:
        raise ValueError("this head has no TF-IDF member")
    if not alpha > 0 or epochs < 1:
        raise ValueError("the TF-IDF member needs alpha > 0 and epochs >= 1")
    head.sparse.attach(featurizer)
    x = featurizer.transform(texts)
    y = np.asarray(y)
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError("the TF-IDF member needs at least two classes in its training texts")
    # n_jobs: one-vs-rest classes fitted on every core (threads; the same coefficients as one thread)
    clf = SGDClassifier(loss="log_loss", alpha=alpha, max_iter=epochs, tol=None, random_state=seed, n_jobs=-1)
    clf.fit(x, y)
    num_labels = head.config.num_labels
    coef = np.zeros((num_labels, x.shape[1]), dtype=np.float32)
    bias = np.zeros(num_labels, dtype=np.float32)
    if len(classes) == 2:  # a binary SGDClassifier keeps one row: logits (-z, z)
        coef[classes[1]], bias[classes[1]] = clf.coef_[0], clf.intercept_[0]
        coef[classes[0]], bias[classes[0]] = -clf.coef_[0], -clf.intercept_[0]
    else:
        coef[clf.classes_] = clf.coef_
        bias[clf.classes_] = clf.intercept_
    absent = np.setdiff1d(np.arange(num_labels), classes)
    if len(absent):  # a label with no training text here: never the sparse member's pick
        bias[absent] = float(bias[classes].min()) - 10.0
    with torch.no_grad():
        head.sparse.weight.copy_(torch.from_numpy(coef))
        head.sparse.bias.copy_(torch.from_numpy(bias))
    return {"n_features": int(x.shape[1]), "epochs": epochs, "alpha": alpha}


def simplex_grid(k: int, step: float = WEIGHT_STEP) -> np.ndarray:
    """Every weight vector of ``k`` non-negative multiples of ``step`` summing to 1, ``[m, k]``."""
    n = int(round(1 / step))
    rows = [c for c in itertools.product(range(n + 1), repeat=k - 1) if sum(c) <= n]
    return np.array([[*c, n - sum(c)] for c in rows], dtype=np.float64) / n


def fit_member_weights(member_logp: torch.Tensor, y: torch.Tensor, step: float = WEIGHT_STEP) -> np.ndarray:
    """Mixing weights minimising the validation NLL of ``log sum_k w_k p_k``.

    ``member_logp`` [k, n, labels]: each member's calibrated log-probabilities. Ties go to
    the most even weights (the grid point closest to uniform).
    """
    k = member_logp.shape[0]
    grid = simplex_grid(k, step)
    lp = member_logp.double()
    picked = lp[:, torch.arange(len(y)), y]  # [k, n]: log-probability of the true class per member
    with torch.no_grad():
        w = torch.from_numpy(grid)  # [m, k]
        logw = torch.log(w)
        nll = -torch.logsumexp(logw[:, :, None] + picked[None], dim=1).mean(dim=1)  # [m]
    nll_np = nll.numpy()
    spread = np.abs(grid - 1.0 / k).sum(1)
    best = np.lexsort((spread, np.round(nll_np, 9)))[0]
    return grid[best]
