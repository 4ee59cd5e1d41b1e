"""The TF-IDF member and the members' mixing weights; the hybrid beats embeddings that miss the words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedclf.embedders.fake import FakeEmbedder
from embedclf.training.sparse import fit_member_weights, simplex_grid
from embedclf.training.trainer import TrainParams, train_head
from tests.training.textdata import make_texts

FAST = dict(hidden_dim=32, num_layers=2, epochs=8, batch_size=32, tfidf_epochs=10)


def test_simplex_grid_covers_the_simplex():
    g = simplex_grid(3, 0.25)
    assert g.shape == (15, 3)
    np.testing.assert_allclose(g.sum(1), 1.0)
    assert (g >= 0).all() and len({tuple(r) for r in g}) == len(g)


def test_member_weights_favour_the_informative_member():
    rng = np.random.default_rng(0)
    n, k = 400, 5
    y = torch.from_numpy(rng.integers(0, k, n))
    good = torch.full((n, k), -3.0)
    good[torch.arange(n), y] = 0.0
    noise = torch.from_numpy(rng.normal(size=(n, k))).float()
    logp = torch.stack([torch.log_softmax(good, -1), torch.log_softmax(noise, -1)])
    w = fit_member_weights(logp, y)
    assert w[0] > 0.8 and w.sum() == pytest.approx(1.0)
    # identical members: every weighting ties, the most even one wins
    same = torch.stack([torch.log_softmax(good, -1)] * 2)
    np.testing.assert_allclose(fit_member_weights(same, y), [0.5, 0.5])


def test_hybrid_beats_dense_when_the_embedding_misses_the_words():
    """A 16-bucket hashing embedder blurs the topic words together; the TF-IDF member keeps them: the hybrid wins."""
    torch.set_num_threads(1)
    texts, labels = make_texts(40, seed=1)
    test_texts, test_labels = make_texts(30, seed=2)
    emb = FakeEmbedder(16)
    X, Xt = emb.embed_batch(texts), emb.embed_batch(test_texts)

    def accuracy(params: TrainParams) -> float:
        res = train_head(X, labels, params, texts=texts)
        pred = np.asarray(res.labels)[res.head.predict_proba(Xt, test_texts).argmax(1)]
        return float((pred == np.asarray(test_labels)).mean())

    dense = accuracy(TrainParams(**FAST))
    hybrid = accuracy(TrainParams(**FAST, tfidf_member=True))
    fitted = accuracy(TrainParams(**FAST, tfidf_member=True, member_weights="fit"))
    print(f"dense {dense:.3f} hybrid {hybrid:.3f} fitted {fitted:.3f}")
    assert hybrid > dense + 0.1 and hybrid > 0.85
    assert fitted > dense + 0.1


def test_member_weights_option_is_checked():
    with pytest.raises(ValueError, match="member_weights"):
        TrainParams(member_weights="vote")
