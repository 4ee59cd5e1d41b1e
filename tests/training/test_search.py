"""Optuna search over embeddings: the space, the objective, reproducibility."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from embedclf.training.search import SPACE, search_params
from embedclf.training.trainer import TrainParams


def blobs(n_per: int = 60, k: int = 4, dim: int = 16, noise: float = 1.6, seed: int = 0):
    """Gaussian clusters that overlap enough for hyper-parameters to matter."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, dim)) * 1.5
    X = np.concatenate([c + noise * rng.standard_normal((n_per, dim)) for c in centers]).astype(np.float32)
    labels = [f"c{i}" for i in range(k) for _ in range(n_per)]
    return X, labels


BASE = TrainParams(epochs=12, val_fraction=0.25, seed=3)


def test_search_returns_the_best_trial_within_the_space():
    X, labels = blobs()
    res = search_params(X, labels, 5, BASE)
    assert len(res.trials) == 5 and [t["trial"] for t in res.trials] == list(range(5))
    best_row = res.trials[res.best_trial]
    assert round(res.best_value, 4) == best_row["val_accuracy"] == max(t["val_accuracy"] for t in res.trials)
    # the best params are exactly what that trial tried, on top of the base params
    for key, value in best_row.items():
        if key in {f.name for f in fields(TrainParams)}:
            assert getattr(res.best, key) == value
    assert res.best.seed == BASE.seed and res.best.val_fraction == BASE.val_fraction
    for t in res.trials:
        lo, hi = SPACE["lr"][1:]
        assert lo <= t["lr"] <= hi and 1 <= t["num_layers"] <= 3
        assert 5 <= t["epochs"] <= BASE.epochs
        if t["num_layers"] == 1:  # no hidden layer: hidden size, dropout, a linear member are not searched
            assert "hidden_dim" not in t and "dropout" not in t and "linear_member" not in t
        if not t.get("linear_member"):
            assert "linear_c" not in t
        else:
            assert SPACE["linear_c"][1] <= t["linear_c"] <= SPACE["linear_c"][2]
    # the returned head is the best trial's and scores what the trial reported on validation
    assert round(res.best_result.val_metrics["accuracy"], 4) == best_row["val_accuracy"]
    stored = res.to_dict()
    assert stored["n_trials"] == 5 and stored["best_trial"] == res.best_trial and stored["trials"] == res.trials
    assert 0.25 < res.best_value <= 1.0  # better than chance on 4 classes


def test_search_is_reproducible_with_the_seed():
    X, labels = blobs(seed=1)
    a = search_params(X, labels, 3, BASE)
    b = search_params(X, labels, 3, BASE)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a.trials) == strip(b.trials)
    assert a.best == b.best


def test_search_rejects_zero_trials():
    X, labels = blobs(n_per=10)
    with pytest.raises(ValueError, match="n_trials"):
        search_params(X, labels, 0, BASE)
