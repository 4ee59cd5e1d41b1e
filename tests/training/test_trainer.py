"""train_head / fit_temperature on small synthetic problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from embedclf.heads.checkpoint import same_weights
from embedclf.training.split import LabelEncoder, stratified_split
from embedclf.training.trainer import (
    MIN_CALIBRATION_EXAMPLES,
    MIN_STEPS_PER_EPOCH,
    TEMPERATURE_RANGE,
    TrainParams,
    effective_batch,
    fit_temperature,
    train_head,
)

LABELS = ["alpha", "beta", "gamma", "delta"]
FAST = dict(hidden_dim=64, num_layers=2, dropout=0.1, epochs=12, batch_size=32, lr=3e-3, patience=100)




def blobs(n_per_class: int, dim: int = 64, seed: int = 0, centers_seed: int = 42, spread: float = 1.0):
    """Gaussian blobs: one well-separated centre per label."""
    centers = np.random.default_rng(centers_seed).normal(size=(len(LABELS), dim)) * 2.0
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centers]).astype(np.float32)
    y = [lbl for lbl in LABELS for _ in range(n_per_class)]
    order = rng.permutation(len(y))
    return X[order], [y[i] for i in order]


@pytest.fixture(scope="module")
def trained():
    X, y = blobs(60)
    return train_head(X, y, TrainParams(**FAST))


def test_learns_separable_blobs(trained):
    assert trained.labels == sorted(LABELS)
    assert trained.val_metrics["accuracy"] > 0.95
    Xt, yt = blobs(50, seed=99)  # fresh draw from the same centres
    pred = trained.head.predict_proba(Xt).argmax(1)
    acc = np.mean([trained.labels[p] == t for p, t in zip(pred, yt)])
    assert acc > 0.95


def test_history_and_callback():
    X, y = blobs(30)
    seen = []
    res = train_head(X, y, TrainParams(**(FAST | {"epochs": 5})), on_epoch=lambda e, n, row: seen.append((e, n, row)))
    assert [e for e, _, _ in seen] == [1, 2, 3, 4, 5]
    assert all(n == 5 for _, n, _ in seen)
    assert [row for _, _, row in seen] == res.history
    for row in res.history:
        assert set(row) == {"epoch", "train_loss", "val_loss", "val_accuracy"}
        assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
        assert 0.0 <= row["val_accuracy"] <= 1.0
    assert 1 <= res.best_epoch <= 5
    assert res.seconds > 0
    assert res.params.epochs == 5


def test_training_loss_decreases(trained):
    losses = [h["train_loss"] for h in trained.history]
    assert losses[-1] < losses[0] * 0.5


def test_deterministic_under_same_seed():
    X, y = blobs(30)
    params = TrainParams(**(FAST | {"epochs": 4, "seed": 5}))
    a = train_head(X, y, params)
    b = train_head(X, y, params)
    assert same_weights(a.head, b.head)
    assert a.history == b.history
    np.testing.assert_array_equal(a.head.predict_proba(X), b.head.predict_proba(X))


def test_different_seed_gives_different_weights():
    X, y = blobs(30)
    a = train_head(X, y, TrainParams(**(FAST | {"epochs": 2, "seed": 1})))
    b = train_head(X, y, TrainParams(**(FAST | {"epochs": 2, "seed": 2})))
    assert not same_weights(a.head, b.head)


def test_head_config_follows_params():
    X, y = blobs(15, dim=10)
    res = train_head(X, y, TrainParams(hidden_dim=7, num_layers=3, dropout=0.3, linear_skip=False, epochs=1))
    cfg = res.head.config
    assert (cfg.input_dim, cfg.num_labels, cfg.hidden_dim, cfg.num_layers) == (10, 4, 7, 3)
    assert cfg.dropout == 0.3 and cfg.linear_skip is False
    assert not res.head.training


# --- temperature ---------------------------------------------------------------------


def test_temperature_is_one_with_small_validation_set(trained):
    # 240 examples, 10% validation -> 24 < MIN_CALIBRATION_EXAMPLES
    assert trained.temperature == 1.0
    assert float(trained.head.temperature) == 1.0


def test_temperature_fitted_with_large_validation_set():
    X, y = blobs(130)
    # 25% label noise: validation accuracy ~0.8, so the best temperature lies inside the range
    rng = np.random.default_rng(7)
    y = [LABELS[rng.integers(0, 4)] if rng.random() < 0.25 else lbl for lbl in y]
    params = TrainParams(**(FAST | {"epochs": 6, "val_fraction": 0.25}))
    res = train_head(X, y, params)
    enc = LabelEncoder.fit(y)
    _, va_idx = stratified_split(enc.encode(y), params.val_fraction, seed=params.seed)
    assert len(va_idx) >= MIN_CALIBRATION_EXAMPLES
    lo, hi = TEMPERATURE_RANGE
    assert lo < res.temperature < hi
    assert res.temperature != 1.0
    assert float(res.head.temperature) == pytest.approx(res.temperature)
    # the stored temperature calibrates: validation NLL no worse than with T = 1
    yv = torch.from_numpy(enc.encode(y)[va_idx])
    with torch.no_grad():
        logits = res.head(torch.from_numpy(X[va_idx]))
    nll_fitted = float(nn.functional.cross_entropy(logits / res.temperature, yv))
    assert nll_fitted <= float(nn.functional.cross_entropy(logits, yv)) + 1e-6
    assert res.val_metrics["log_loss"] == pytest.approx(nll_fitted, rel=1e-4)


def test_fit_temperature_untrusted_below_minimum():
    logits = torch.eye(3).repeat(30, 1) * 20  # 90 perfectly classified rows
    y = torch.arange(3).repeat(30)
    assert len(y) < MIN_CALIBRATION_EXAMPLES
    assert fit_temperature(logits, y) == 1.0


def test_fit_temperature_recovers_known_overconfidence():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3000, 5, generator=g) * 2
    y = torch.multinomial(torch.softmax(z, dim=-1), 1, generator=g).squeeze(1)  # calibrated at T=1
    t = fit_temperature(z * 3.0, y)  # logits made 3x too confident
    assert 2.4 < t < 3.6
    t1 = fit_temperature(z, y)
    assert 0.85 < t1 < 1.15


def test_fit_temperature_is_local_minimum_of_nll():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(500, 4, generator=g)
    y = torch.multinomial(torch.softmax(z * 0.7, dim=-1), 1, generator=g).squeeze(1)
    t = fit_temperature(z, y)

    def nll(temp: float) -> float:
        return float(nn.functional.cross_entropy(z / temp, y))

    assert nll(t) <= nll(t * 1.05) + 1e-7
    assert nll(t) <= nll(t / 1.05) + 1e-7
    assert nll(t) < nll(1.0)


def test_fit_temperature_clipped_to_range():
    lo, hi = TEMPERATURE_RANGE
    y = torch.arange(4).repeat(50)
    perfect = torch.nn.functional.one_hot(y, 4).float() * 50
    assert fit_temperature(perfect, y) == pytest.approx(lo)
    wrong = torch.nn.functional.one_hot((y + 1) % 4, 4).float() * 50
    assert fit_temperature(wrong, y) == pytest.approx(hi)


# --- early stopping -----------------------------------------------------------------


@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping_respects_patience(patience):
    rng = np.random.default_rng(0)
    # 1,200 texts -> 120 validation texts: enough to select an epoch (>= 100)
    X = rng.normal(size=(1200, 16)).astype(np.float32)
    y = [LABELS[i] for i in rng.integers(0, 4, size=1200)]  # pure noise: validation can't keep improving
    params = TrainParams(**(FAST | {"epochs": 40, "patience": patience, "lr": 1e-2}))
    res = train_head(X, y, params)
    n = len(res.history)
    assert n < params.epochs, "noise labels should trigger early stopping"
    assert n == res.best_epoch + patience
    best = res.history[res.best_epoch - 1]
    key = lambda h: (h["val_accuracy"], -h["val_loss"])  # noqa: E731
    assert all(key(h) <= key(best) for h in res.history)
    # the returned MLP member is the best epoch's, not the last one's
    assert res.members["mlp"]["val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert res.members["mlp"]["best_epoch"] == res.best_epoch


def test_small_validation_set_keeps_the_last_epoch():
    """Under 100 validation texts no epoch is selected (that would pick noise): the annealed end is kept."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 16)).astype(np.float32)
    y = [LABELS[i] for i in rng.integers(0, 4, size=120)]
    params = TrainParams(**(FAST | {"epochs": 12, "patience": 1, "lr": 1e-2}))
    res = train_head(X, y, params)
    assert len(res.history) == 12 and res.best_epoch == 12
    assert res.members["mlp"]["val_accuracy"] == pytest.approx(res.history[-1]["val_accuracy"])


def test_patience_longer_than_run_uses_all_epochs():
    X, y = blobs(20)
    res = train_head(X, y, TrainParams(**(FAST | {"epochs": 6, "patience": 50})))
    assert len(res.history) == 6


# --- input validation ------------------------------------------------------------------


def test_rejects_mismatched_rows_and_labels():
    X, y = blobs(10)
    with pytest.raises(ValueError, match="one label per row"):
        train_head(X, y[:-1], TrainParams(**FAST))
    with pytest.raises(ValueError):
        train_head(X[0], y[:1], TrainParams(**FAST))


def test_rejects_single_label():
    X = np.zeros((10, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="2 distinct labels"):
        train_head(X, ["a"] * 10, TrainParams(**FAST))


def test_rejects_data_too_small_for_validation():
    X = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="validation"):
        train_head(X, ["a", "b", "c"], TrainParams(**FAST))


@pytest.mark.parametrize("epochs, n_per_class", [(5, 18), (1, 10), (2, 10), (10, 10)])
def test_short_schedules_train(epochs, n_per_class):
    """Any number of optimizer steps works: torch's OneCycleLR alone divides by zero at 10 steps."""
    X, y = blobs(n_per_class)
    res = train_head(X, y, TrainParams(**(FAST | {"epochs": epochs, "batch_size": 32})))
    assert len(res.history) == epochs
    assert all(np.isfinite(row["train_loss"]) for row in res.history)


# --- the linear member -----------------------------------------------------------------


def test_linear_member_is_fitted_calibrated_and_mixed():
    X, y = blobs(130, spread=3.0)  # overlapping blobs: neither member is perfect
    params = TrainParams(**(FAST | {"epochs": 6, "val_fraction": 0.25}))
    res = train_head(X, y, params)
    head = res.head
    assert head.config.linear_member and set(res.members) == {"mlp", "linear"}
    assert res.members["linear"]["lbfgs_iterations"] > 0
    assert head.member_temperature.tolist() == pytest.approx(
        [res.members["mlp"]["temperature"], res.members["linear"]["temperature"]])
    # the stored validation logits are the mix's, before the final temperature
    enc = LabelEncoder.fit(y)
    _, va_idx = stratified_split(enc.encode(y), params.val_fraction, seed=params.seed)
    with torch.no_grad():
        np.testing.assert_allclose(res.val_logits, head(torch.from_numpy(X[va_idx])).numpy(), rtol=1e-5, atol=1e-6)
        lin_acc = float((head.linear_logits(torch.from_numpy(X[va_idx])).argmax(1).numpy() == res.val_y).mean())
    assert res.members["linear"]["val_accuracy"] == pytest.approx(lin_acc)
    assert lin_acc > 0.6  # a real classifier, not the zero init
    assert res.val_metrics["accuracy"] == pytest.approx(float((res.val_logits.argmax(1) == res.val_y).mean()))


def test_linear_member_solves_scikit_learn_logistic_regression():
    """Same objective as sklearn's LogisticRegression(C): the probabilities agree."""
    from sklearn.linear_model import LogisticRegression

    from embedclf.heads.mlp import HeadConfig, MLPHead
    from embedclf.training.trainer import fit_linear

    X, y = blobs(80, dim=16, spread=3.0)
    yi = LabelEncoder.fit(y).encode(y)
    head = MLPHead(HeadConfig(input_dim=16, num_labels=4, hidden_dim=8, num_layers=2, linear_member=True))
    Xt = torch.from_numpy(X)
    head.set_center(Xt)
    fit_linear(head, Xt, torch.from_numpy(yi), c=2.0)
    with torch.no_grad():
        z = head.preprocess(Xt)
        ours = torch.softmax(head.linear_logits(Xt), -1).numpy()
    ref = LogisticRegression(C=2.0, max_iter=5000, tol=1e-10).fit(z.numpy(), yi).predict_proba(z.numpy())
    np.testing.assert_allclose(ours, ref, atol=2e-3)
    with pytest.raises(ValueError, match="linear_c"):
        fit_linear(head, Xt, torch.from_numpy(yi), c=0.0)


def test_linear_member_is_deterministic_and_optional():
    X, y = blobs(40)
    a = train_head(X, y, TrainParams(**(FAST | {"epochs": 3})))
    b = train_head(X, y, TrainParams(**(FAST | {"epochs": 3})))
    assert same_weights(a.head, b.head)
    off = train_head(X, y, TrainParams(**(FAST | {"epochs": 3, "linear_member": False})))
    assert off.head.linear is None and set(off.members) == {"mlp"}
    # the MLP member is trained exactly as without the linear member
    sa, so = a.head.state_dict(), off.head.state_dict()
    assert all(torch.equal(sa[k], so[k]) for k in so if k != "temperature")
    # a 1-layer head already is a softmax regression: no second one
    one = train_head(X, y, TrainParams(**(FAST | {"epochs": 3, "num_layers": 1})))
    assert one.head.linear is None


def test_effective_batch_keeps_large_sets_and_shrinks_for_small_ones():
    # BANKING77-sized: the tuned batch and learning rate, untouched
    assert effective_batch(9_000, 256, 3e-3) == (256, 3e-3)
    assert effective_batch(256 * MIN_STEPS_PER_EPOCH, 256, 3e-3) == (256, 3e-3)
    # the 300-text demo: at least MIN_STEPS_PER_EPOCH batches, lr scaled by sqrt(batch ratio)
    batch, lr = effective_batch(270, 256, 3e-3)
    assert batch == 270 // MIN_STEPS_PER_EPOCH and -(-270 // batch) >= MIN_STEPS_PER_EPOCH
    assert lr == pytest.approx(3e-3 * (batch / 256) ** 0.5)
    assert effective_batch(20, 256, 3e-3)[0] == 8  # never below 8
    assert effective_batch(20, 4, 1e-3) == (4, 1e-3)  # a batch asked smaller than that stays


def test_a_small_set_takes_many_steps_an_epoch():
    """With the default batch of 256, 160 rows would be one step an epoch; the trainer takes 16+."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 8)).astype(np.float32)
    y = [str(i % 2) for i in range(160)]
    X[np.array(y) == "1"] += 2.0
    steps = []
    orig = torch.optim.AdamW.step

    def counting(self, *a, **k):
        steps.append(1)
        return orig(self, *a, **k)

    torch.optim.AdamW.step = counting
    try:
        r = train_head(X, y, TrainParams(epochs=2, hidden_dim=8, linear_member=False, val_fraction=0.2))
    finally:
        torch.optim.AdamW.step = orig
    assert len(steps) == 2 * -(-128 // max(8, 128 // MIN_STEPS_PER_EPOCH)) and len(steps) >= 2 * MIN_STEPS_PER_EPOCH
    assert r.val_metrics["accuracy"] > 0.9
