"""MLPHead / HeadConfig / top_k: shapes, probabilities, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedclf.heads.mlp import HeadConfig, MLPHead, top_k


def make_head(seed: int = 0, **overrides) -> MLPHead:
    torch.manual_seed(seed)
    cfg = dict(input_dim=16, num_labels=5, hidden_dim=32, num_layers=3, dropout=0.2)
    cfg.update(overrides)
    head = MLPHead(HeadConfig(**cfg))
    head.eval()
    return head


def rand_x(n: int = 10, d: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


# --- HeadConfig -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(input_dim=0, num_labels=3), "input_dim"),
        (dict(input_dim=4, num_labels=1), "labels"),
        (dict(input_dim=4, num_labels=3, num_layers=0), "num_layers"),
        (dict(input_dim=4, num_labels=3, activation="tanh"), "activation"),
        (dict(input_dim=4, num_labels=3, dropout=1.0), "dropout"),
        (dict(input_dim=4, num_labels=3, dropout=-0.1), "dropout"),
    ],
)
def test_config_rejects_invalid_values(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        HeadConfig(**kwargs)


def test_config_dict_roundtrip_and_unknown_keys():
    cfg = HeadConfig(input_dim=8, num_labels=3, hidden_dim=7, num_layers=2, activation="relu", input_norm=False)
    assert HeadConfig.from_dict(cfg.to_dict()) == cfg
    data = cfg.to_dict() | {"bogus": 1}
    with pytest.raises(ValueError, match="bogus"):
        HeadConfig.from_dict(data)


@pytest.mark.parametrize("num_layers", [1, 2, 4])
def test_layer_count_matches_config(num_layers):
    head = make_head(num_layers=num_layers)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert len(linears) == num_layers
    assert linears[-1].out_features == 5
    # a 1-layer head is plain logistic regression: no extra skip path
    assert (head.skip is None) == (num_layers == 1)


def test_linear_skip_can_be_disabled():
    assert make_head(linear_skip=False).skip is None


# --- predict_proba ----------------------------------------------------------------


def test_predict_proba_rows_are_distributions():
    head = make_head()
    p = head.predict_proba(rand_x(12))
    assert p.shape == (12, 5)
    assert p.dtype == np.float32
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_predict_proba_accepts_tensor_and_array_equally():
    head = make_head()
    x = rand_x(4)
    np.testing.assert_array_equal(head.predict_proba(x), head.predict_proba(torch.from_numpy(x)))


@pytest.mark.parametrize("shape", [(16,), (3, 15), (3, 17), (2, 3, 16)])
def test_predict_proba_rejects_wrong_shapes(shape):
    head = make_head()
    with pytest.raises(ValueError, match="16"):
        head.predict_proba(np.zeros(shape, dtype=np.float32))


def test_predict_proba_is_deterministic_and_restores_training_mode():
    head = make_head(dropout=0.9)
    head.train()
    x = rand_x(6)
    a = head.predict_proba(x)
    b = head.predict_proba(x)
    # dropout must be off during prediction, otherwise the two calls would differ
    np.testing.assert_array_equal(a, b)
    assert head.training, "predict_proba must restore the caller's train/eval mode"
    head.eval()
    head.predict_proba(x)
    assert not head.training


def test_predict_proba_rows_are_independent_of_batch():
    head = make_head()
    x = rand_x(8)
    full = head.predict_proba(x)
    for i in range(len(x)):
        np.testing.assert_allclose(head.predict_proba(x[i : i + 1])[0], full[i], rtol=1e-5, atol=1e-6)


def test_input_norm_makes_predictions_scale_invariant():
    head = make_head(input_norm=True)
    head.set_center(torch.from_numpy(rand_x(20, seed=5)))
    x = rand_x(5)
    base = head.predict_proba(x)
    for scale in (0.001, 3.0, 1000.0):
        np.testing.assert_allclose(head.predict_proba(x * scale), base, rtol=1e-4, atol=1e-6)


def test_without_input_norm_scaling_changes_predictions():
    head = make_head(input_norm=False)
    x = rand_x(5)
    assert not np.allclose(head.predict_proba(x * 50.0), head.predict_proba(x), atol=1e-3)


def test_set_center_is_mean_of_normalised_inputs():
    head = make_head()
    x = rand_x(30, seed=3)
    head.set_center(torch.from_numpy(x))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(head.center.numpy(), unit.mean(axis=0), atol=1e-6)
    # after centring, the preprocessed training inputs have zero mean
    z = head.preprocess(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-6)


def test_temperature_flattens_distribution_but_keeps_ranking():
    head = make_head()
    x = rand_x(6)
    p1 = head.predict_proba(x)
    head.temperature.fill_(4.0)
    p4 = head.predict_proba(x)
    np.testing.assert_array_equal(p1.argsort(axis=1), p4.argsort(axis=1))
    assert np.all(p4.max(axis=1) < p1.max(axis=1))
    # T -> softmax(logits / T): check against an explicit computation
    with torch.no_grad():
        logits = head(torch.from_numpy(x))
    np.testing.assert_allclose(p4, torch.softmax(logits / 4.0, dim=-1).numpy(), rtol=1e-5, atol=1e-7)


def test_temperature_and_center_are_part_of_state_dict():
    keys = set(make_head().state_dict())
    assert {"center", "temperature"} <= keys


# --- top_k ------------------------------------------------------------------------


def test_top_k_orders_by_probability():
    proba = np.array([[0.1, 0.5, 0.15, 0.25], [0.7, 0.05, 0.05, 0.2]], dtype=np.float32)
    labels = ["a", "b", "c", "d"]
    out = top_k(proba, labels, 3)
    assert [lbl for lbl, _ in out[0]] == ["b", "d", "c"]
    assert [lbl for lbl, _ in out[1]] == ["a", "d", "b"]  # tie b/c: lower index first
    for row, probs in zip(out, proba):
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
        for lbl, s in row:
            assert s == pytest.approx(float(probs[labels.index(lbl)]))
        assert all(isinstance(s, float) for s in scores)


def test_top_k_caps_k_at_number_of_labels():
    proba = np.array([[0.3, 0.7]])
    out = top_k(proba, ["x", "y"], 5)
    assert out == [[("y", pytest.approx(0.7)), ("x", pytest.approx(0.3))]]


def test_top_k_on_head_output_matches_argmax():
    head = make_head()
    labels = [f"l{i}" for i in range(5)]
    p = head.predict_proba(rand_x(7))
    for row, probs in zip(top_k(p, labels, 3), p):
        assert row[0][0] == labels[int(probs.argmax())]
        assert len(row) == 3


# --- two members: MLP + softmax regression --------------------------------------------


def test_linear_member_adds_a_linear_layer_and_member_temperatures():
    head = make_head(linear_member=True)
    assert head.num_members == 2
    assert head.linear is not None and head.linear.in_features == 16 and head.linear.out_features == 5
    assert {"linear.weight", "linear.bias", "member_temperature"} <= set(head.state_dict())
    plain = make_head()
    assert plain.num_members == 1 and plain.linear is None
    assert not any(k.startswith("linear.") or k == "member_temperature" for k in plain.state_dict())
    with pytest.raises(ValueError, match="no linear member"):
        plain.linear_logits(torch.zeros(1, 16))


def test_one_member_forward_is_the_mlp_logits():
    head = make_head()
    x = torch.from_numpy(rand_x(4))
    with torch.no_grad():
        assert torch.equal(head(x), head.mlp_logits(x))


def test_two_members_average_their_calibrated_probabilities():
    head = make_head(linear_member=True)
    head.set_center(torch.from_numpy(rand_x(20, seed=4)))
    with torch.no_grad():
        head.linear.weight.normal_()
        head.member_temperature.copy_(torch.tensor([0.5, 2.0]))
        head.temperature.fill_(1.3)
    x = rand_x(6)
    t = torch.from_numpy(x)
    with torch.no_grad():
        p_mlp = torch.softmax(head.mlp_logits(t) / 0.5, dim=-1)
        p_lin = torch.softmax(head.linear_logits(t) / 2.0, dim=-1)
        mix = (p_mlp + p_lin) / 2
        expected = torch.softmax(torch.log(mix) / 1.3, dim=-1).numpy()
        # forward is the log of the mix: a final temperature of 1 gives the mix itself
        np.testing.assert_allclose(torch.exp(head(t)).numpy(), mix.numpy(), rtol=1e-5, atol=1e-7)
        raw = (torch.softmax(head.mlp_logits(t), -1) + torch.softmax(head.linear_logits(t), -1)) / 2
        np.testing.assert_allclose(torch.exp(head(t, member_temperatures=False)).numpy(), raw.numpy(),
                                   rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(head.predict_proba(x), expected, rtol=1e-5, atol=1e-6)
    # the mix differs from either member alone (both members count)
    assert not np.allclose(head.predict_proba(x), torch.softmax(head.mlp_logits(t) / 0.5 / 1.3, -1).detach().numpy())


def test_config_without_linear_member_key_loads_as_one_member():
    """Heads stored before the linear member existed have no such key in their config."""
    data = HeadConfig(input_dim=8, num_labels=3).to_dict()
    data.pop("linear_member")
    cfg = HeadConfig.from_dict(data)
    assert cfg.linear_member is False and MLPHead(cfg).num_members == 1
