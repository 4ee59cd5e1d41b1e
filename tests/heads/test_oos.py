"""The kNN out-of-scope score: the similarity it computes, its config checks, and a stored head that
abstains on it (safetensors + JSON round trip, strict loading, old heads untouched)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from embedclf.errors import HeadLoadError
from embedclf.heads.abstain import abstain_mask, head_abstain, head_abstain_mask
from embedclf.heads.checkpoint import HeadArtifact, head_from_weights, weights_to_bytes
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.heads.oos import KnnScore, check_config, discounted_confidence, make_config

LABELS = ["billing", "bug", "feature", "oos"]
DIM = 12


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def train_x() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(40, DIM)).astype(np.float32)


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(2).normal(size=(25, DIM)).astype(np.float32)


@pytest.fixture
def head(train_x) -> MLPHead:
    torch.manual_seed(3)
    h = MLPHead(HeadConfig(input_dim=DIM, num_labels=4, hidden_dim=16, num_layers=2, linear_member=True))
    h.set_center(torch.from_numpy(train_x))
    h.set_oos_score(train_x[:30], k=3, beta=2.5)
    h.config = dataclasses.replace(h.config, abstain_threshold=0.2, oos_label="oos")
    h.eval()
    return h


@pytest.mark.parametrize("ort", [False, True])
def test_similarity_is_the_mean_of_the_k_largest_cosines(train_x, x, ort, monkeypatch):
    monkeypatch.setattr("embedclf.heads.nearest._ort", ort)
    score = KnnScore(make_config(4, 1.0, len(train_x)), DIM)
    score.set_vectors(torch.from_numpy(train_x))
    expected = np.sort(unit(x) @ unit(train_x).T, axis=1)[:, -4:].mean(axis=1)
    got = score.similarity(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-3)  # vectors stored in float16
    assert score.vectors.dtype == torch.float16
    # the scale of a raw embedding does not matter (cosine)
    np.testing.assert_allclose(score.similarity(torch.from_numpy(7 * x)).numpy(), got, atol=1e-6)
    assert type(score._search).__name__ == ("OrtSearch" if ort else "TorchSearch")


def test_discount_is_one_on_training_texts_and_shrinks_with_distance(train_x):
    score = KnnScore(make_config(1, 3.0, len(train_x)), DIM)
    score.set_vectors(torch.from_numpy(train_x))
    np.testing.assert_allclose(score.discount(torch.from_numpy(train_x[:5])), 1.0, atol=5e-3)
    far = -train_x[:5]  # opposite directions: far from their own vector, maybe near another
    d = score.discount(torch.from_numpy(far))
    assert (d < 1.0).all() and (d > 0.0).all()
    s = score.similarity(torch.from_numpy(far)).double().numpy()
    np.testing.assert_allclose(d, np.exp(-3.0 * (1 - s)), rtol=1e-9)
    # many rows are scored in chunks, the same as one by one
    many = np.random.default_rng(5).normal(size=(1100, DIM)).astype(np.float32)
    np.testing.assert_array_equal(score.discount(torch.from_numpy(many))[1050:],
                                  score.discount(torch.from_numpy(many[1050:])))


def test_discounted_confidence():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
    np.testing.assert_allclose(discounted_confidence(p, None), [0.7, 0.5])
    np.testing.assert_allclose(discounted_confidence(p, np.array([0.5, 1.0])), [0.35, 0.5])


@pytest.mark.parametrize("bad", [
    None, [], {"kind": "knn-cosine", "k": 3, "beta": 1.0},  # missing key
    {"kind": "knn-cosine", "k": 3, "beta": 1.0, "n_vectors": 10, "extra": 1},
    {"kind": "centroid", "k": 3, "beta": 1.0, "n_vectors": 10},
    {"kind": "knn-cosine", "k": 0, "beta": 1.0, "n_vectors": 10},
    {"kind": "knn-cosine", "k": 11, "beta": 1.0, "n_vectors": 10},
    {"kind": "knn-cosine", "k": 3.0, "beta": 1.0, "n_vectors": 10},
    {"kind": "knn-cosine", "k": True, "beta": 1.0, "n_vectors": 10},
    {"kind": "knn-cosine", "k": 3, "beta": -1.0, "n_vectors": 10},
    {"kind": "knn-cosine", "k": 3, "beta": float("nan"), "n_vectors": 10},
    {"kind": "knn-cosine", "k": 3, "beta": "2", "n_vectors": 10},
])
def test_bad_configs_are_refused(bad):
    with pytest.raises(HeadLoadError):
        check_config(bad)
    if bad is not None:  # None in a head config means "no score"
        with pytest.raises(HeadLoadError):
            HeadConfig(input_dim=DIM, num_labels=3, oos_score=bad)


def test_oos_score_leaves_probabilities_unchanged(train_x, x):
    torch.manual_seed(4)
    h = MLPHead(HeadConfig(input_dim=DIM, num_labels=4, hidden_dim=16, num_layers=2))
    h.eval()
    before = h.predict_proba(x)
    assert h.oos_discount(x) is None and h.config.oos_score is None
    h.set_oos_score(train_x, k=5, beta=3.0)
    np.testing.assert_array_equal(h.predict_proba(x), before)
    assert h.config.oos_score == {"kind": "knn-cosine", "k": 5, "beta": 3.0, "n_vectors": 40}


def test_head_abstains_on_the_discounted_confidence(head, x):
    proba, disc = head.predict_proba(x), head.oos_discount(x)
    mask = head_abstain(head, LABELS, x, proba)
    expected = (proba.max(1) * disc < 0.2) | (proba.argmax(1) == 3)
    np.testing.assert_array_equal(mask, expected)
    # the discount really changes decisions here: the top probability alone would answer more texts
    assert mask.sum() > abstain_mask(proba, 0.2, 3).sum()
    with pytest.raises(ValueError, match="discount"):
        head_abstain_mask(head.config, LABELS, proba)  # the old call cannot ignore the score silently


def test_stored_head_round_trip_keeps_score_and_abstentions(head, x, tmp_path):
    art = HeadArtifact.from_head(head, LABELS, "fake:12")
    assert set(st_load(art.weights)) >= {"oos.vectors"}
    art.save_dir(tmp_path / "h")
    meta = json.loads((tmp_path / "h" / "config.json").read_text())
    assert meta["config"]["oos_score"] == {"kind": "knn-cosine", "k": 3, "beta": 2.5, "n_vectors": 30}
    again = HeadArtifact.load_dir(tmp_path / "h")
    loaded = again.build()
    assert isinstance(loaded, MLPHead) and loaded.config == head.config
    np.testing.assert_array_equal(loaded.state_dict()["oos.vectors"], head.state_dict()["oos.vectors"])
    np.testing.assert_array_equal(loaded.predict_proba(x), head.predict_proba(x))
    np.testing.assert_array_equal(loaded.oos_discount(x), head.oos_discount(x))
    np.testing.assert_array_equal(head_abstain(loaded, again.labels, x, loaded.predict_proba(x)),
                                  head_abstain(head, LABELS, x, head.predict_proba(x)))


def test_loading_is_strict_about_the_score_tensor(head):
    blob = weights_to_bytes(head)
    tensors = st_load(blob)
    without = st_save({k: v for k, v in tensors.items() if k != "oos.vectors"})
    with pytest.raises(RuntimeError, match="oos.vectors"):
        head_from_weights(head.config, without)
    # a config without the score refuses the tensor; a config with another size refuses it too
    with pytest.raises(RuntimeError, match="oos.vectors"):
        head_from_weights(dataclasses.replace(head.config, oos_score=None), blob)
    other = dataclasses.replace(head.config, oos_score={**head.config.oos_score, "n_vectors": 31})
    with pytest.raises(RuntimeError, match="oos.vectors"):
        head_from_weights(other, blob)


def test_heads_without_a_score_store_no_tensor_and_config_key_is_null(train_x, x):
    torch.manual_seed(6)
    h = MLPHead(HeadConfig(input_dim=DIM, num_labels=3, hidden_dim=16, num_layers=2, abstain_threshold=0.5))
    h.eval()
    tensors = st_load(weights_to_bytes(h))
    assert not any(k.startswith("oos.") for k in tensors)
    p = h.predict_proba(x)
    np.testing.assert_array_equal(head_abstain(h, ["a", "b", "c"], x, p), p.max(1) < 0.5)
    # a stored config from before this change (no oos_score key) loads as "no score"
    d = h.config.to_dict()
    del d["oos_score"]
    assert HeadConfig.from_dict(d).oos_score is None
