"""Head numerics: tiny values flushed before products (same logits), and the fast dropout's masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.heads.numerics import TINY, Dropout, flush_tiny, top_indices, unit_rows


def test_flush_tiny_zeroes_only_vanishing_values():
    x = torch.tensor([[1e-33, -4e-34, 0.5, -1e-29, 0.0, 1e-31]])
    assert flush_tiny(x).tolist() == [[0.0, 0.0, 0.5, pytest.approx(-1e-29), 0.0, 0.0]]
    assert float(x[0, 0]) == pytest.approx(1e-33)  # a new tensor: the input is kept
    u = unit_rows(torch.tensor([[3.0, 4.0, 1e-35]]))
    assert u.tolist() == [[pytest.approx(0.6), pytest.approx(0.8), 0.0]]


def test_a_head_gives_the_same_logits_with_and_without_vanishing_inputs():
    # int8 MiniLM gives every text two dimensions of ~1e-33 (the reason for flush_tiny)
    torch.manual_seed(0)
    head = MLPHead(HeadConfig(input_dim=32, num_labels=5, hidden_dim=16, linear_member=True)).eval()
    x = torch.randn(64, 32)
    head.set_center(x)
    tiny = x.clone()
    tiny[:, [3, 17]] = torch.randn(64, 2) * 1e-33
    zeroed = x.clone()
    zeroed[:, [3, 17]] = 0.0
    z = head.preprocess(tiny)
    assert not bool(((z != 0) & (z.abs() < TINY)).any())
    with torch.no_grad():
        torch.testing.assert_close(head(tiny), head(zeroed), rtol=0, atol=1e-6)
        # and the same to float rounding as the product of the unflushed values
        raw = head._normalize(tiny) - head.center
        torch.testing.assert_close(head.mlp_logits(tiny), head._mlp(raw), rtol=0, atol=1e-6)


def test_dropout_masks_are_seeded_unbiased_and_only_in_training():
    d = Dropout(0.3)
    x = torch.ones(400, 500)
    torch.manual_seed(1)
    a = d(x)
    torch.manual_seed(1)
    assert torch.equal(a, d(x))  # torch.manual_seed fixes the masks
    assert not torch.equal(a, d(x))  # and the next pass draws new ones
    kept = float((a != 0).float().mean())
    assert kept == pytest.approx(0.7, abs=0.005)
    assert float(a.mean()) == pytest.approx(1.0, abs=0.01)  # inverted dropout keeps the expectation
    assert torch.unique(a).tolist() == [0.0, pytest.approx(1 / 0.7, rel=1e-4)]
    odd = torch.randn(3, 7, requires_grad=True)  # sizes that are not a multiple of 4
    out = d(odd)
    out.sum().backward()
    assert torch.equal(odd.grad != 0, out != 0)  # gradients flow through the kept units only
    d.eval()
    assert d(x) is x
    assert Dropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout"):
        Dropout(1.0)


def _stable(p: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-p, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_indices_equals_a_stable_sort_with_ties_and_zeros(dtype):
    rng = np.random.default_rng(5)
    p = rng.random((300, 77)).astype(dtype)
    p[::3] = np.round(p[::3], 1)  # many ties, the lower index must come first
    p[1, :] = 0.0
    p[2, :5] = [-0.0, 0.0, -0.0, 0.0, 1e-40]
    p[4, 10:13] = p[4].max()
    for k in (1, 2, 3, 5):
        got = top_indices(p, k)
        assert got.shape == (300, k)
        assert np.array_equal(got, _stable(p, k))
    assert np.array_equal(p[1], np.zeros(77, dtype))  # the input is not changed


def test_top_indices_non_finite_and_small_inputs_take_the_full_sort():
    p = np.random.default_rng(1).random((6, 40))
    p[0, 3], p[1, 7], p[2, 9] = np.nan, np.inf, -np.inf
    assert np.array_equal(top_indices(p, 3), _stable(p, 3))
    few = np.array([[0.2, 0.5, 0.3], [0.5, 0.5, 0.0]])
    assert top_indices(few, 5).tolist() == [[1, 2, 0], [0, 1, 2]]
    assert top_indices(np.zeros((0, 77)), 3).shape == (0, 3)
    ints = np.random.default_rng(2).integers(0, 5, (20, 40))
    assert np.array_equal(top_indices(ints, 3), _stable(ints, 3))
