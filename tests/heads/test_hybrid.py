"""Hybrid heads (dense members + a TF-IDF member): storage round trips, strict loading, text handling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from embedclf.embedders.fake import FakeEmbedder
from embedclf.heads.checkpoint import HeadArtifact, head_from_weights
from embedclf.heads.mlp import HeadConfig
from embedclf.training.trainer import TrainParams, train_head
from tests.training.textdata import make_texts

FAST = dict(hidden_dim=32, num_layers=2, epochs=4, batch_size=32, tfidf_epochs=5)


@pytest.fixture(scope="module")
def hybrid():
    torch.set_num_threads(1)
    texts, labels = make_texts(40, seed=4)
    X = FakeEmbedder(16).embed_batch(texts)
    res = train_head(X, labels, TrainParams(**FAST, tfidf_member=True, member_weights="fit"), texts=texts)
    new_texts, _ = make_texts(6, seed=77)
    return res, new_texts, FakeEmbedder(16).embed_batch(new_texts)


def test_hybrid_head_has_three_weighted_members(hybrid):
    res, texts, X = hybrid
    head = res.head
    assert head.member_names == ["mlp", "linear", "tfidf"] and head.uses_texts
    assert set(res.members) == {"mlp", "linear", "tfidf"}
    w = head.member_weight.numpy()
    assert w.shape == (3,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert [res.members[n]["weight"] for n in head.member_names] == pytest.approx(w.tolist(), abs=1e-4)
    p = head.predict_proba(X, texts)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)


def test_hybrid_needs_the_texts(hybrid):
    res, texts, X = hybrid
    with pytest.raises(ValueError, match="pass the texts"):
        res.head.predict_proba(X)
    with pytest.raises(ValueError, match="pass the texts"):
        res.head.predict_proba(X, texts[:-1])
    with pytest.raises(ValueError, match="needs the texts"):
        train_head(X[:6], ["a", "b"] * 3, TrainParams(**FAST, tfidf_member=True))  # no texts


def test_artifact_round_trip_predicts_identically(hybrid, tmp_path):
    res, texts, X = hybrid
    art = HeadArtifact.from_head(res.head, res.labels, "fake:16")
    for again in (art.build(), HeadArtifact.load_dir(art.save_dir(tmp_path / "h")).build()):
        assert again.uses_texts
        np.testing.assert_array_equal(again.predict_proba(X, texts), res.head.predict_proba(X, texts))
        assert torch.equal(again.member_weight, res.head.member_weight)
    meta = json.loads((tmp_path / "h" / "config.json").read_text())
    assert meta["config"]["tfidf"]["parts"][1]["n_terms"] > 0
    assert len(json.dumps(meta["config"])) < 2000  # the vocabulary is in safetensors, not in the JSON config
    names = set(st_load(art.weights))
    assert {"sparse.weight", "sparse.bias", "member_weight", "tfidf.word.idf", "tfidf.char.vocab_bytes"} <= names


def test_strict_loading(hybrid):
    res, _, _ = hybrid
    config = res.head.config
    tensors = st_load(HeadArtifact.from_head(res.head, res.labels, "fake:16").weights)
    missing = {k: v for k, v in tensors.items() if k != "tfidf.char.idf"}
    with pytest.raises(ValueError, match="missing"):
        head_from_weights(config, st_save(missing))
    with pytest.raises(RuntimeError, match="sparse.weight"):
        head_from_weights(config, st_save({k: v for k, v in tensors.items() if k != "sparse.weight"}))
    # a dense config given hybrid weights: the TF-IDF tensors are refused, not ignored
    dense = HeadConfig.from_dict({**config.to_dict(), "tfidf": None})
    with pytest.raises(ValueError, match="unexpected TF-IDF"):
        head_from_weights(dense, st_save(tensors))
    # a config whose vocabulary size disagrees with the stored tensors
    bad = json.loads(json.dumps(config.to_dict()))
    bad["tfidf"]["parts"][0]["n_terms"] += 1
    with pytest.raises((ValueError, RuntimeError)):
        head_from_weights(HeadConfig.from_dict(bad), st_save(tensors))
    with pytest.raises(ValueError, match="unknown head config keys"):
        HeadConfig.from_dict({**config.to_dict(), "tfidf_extra": 1})
    with pytest.raises(ValueError, match="tfidf must be"):
        HeadConfig.from_dict({**config.to_dict(), "tfidf": "yes"})


def test_equal_weights_and_no_linear_member():
    texts, labels = make_texts(30, seed=5)
    X = FakeEmbedder(8).embed_batch(texts)
    res = train_head(X, labels, TrainParams(**FAST, linear_member=False, tfidf_member=True), texts=texts)
    assert res.head.member_names == ["mlp", "tfidf"]
    assert res.head.member_weight.tolist() == [0.5, 0.5]
    again = HeadArtifact.from_head(res.head, res.labels, "fake:8").build()
    np.testing.assert_array_equal(again.predict_proba(X[:5], texts[:5]), res.head.predict_proba(X[:5], texts[:5]))


def test_sparse_logits_follow_weight_updates(hybrid):
    res, texts, _ = hybrid
    sparse = res.head.sparse
    before = sparse.logits(texts).clone()
    x = sparse.featurizer.transform(texts)
    np.testing.assert_allclose(before.numpy(), x @ sparse.weight.detach().numpy().T + sparse.bias.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    saved = sparse.weight.detach().clone()
    try:
        with torch.no_grad():
            sparse.weight.mul_(2.0)  # an in-place update must not leave a stale cached transpose
        after = sparse.logits(texts)
        bias = sparse.bias.detach()
        np.testing.assert_allclose((after - bias).numpy(), 2 * (before - bias).numpy(), rtol=1e-5,
                                   atol=1e-5)
    finally:
        with torch.no_grad():
            sparse.weight.copy_(saved)
    np.testing.assert_array_equal(sparse.logits(texts).numpy(), before.numpy())
