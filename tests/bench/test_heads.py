"""bench heads: paired k-fold cross-validation of head variants (fake data; the CLI smoke test is in test_bench)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from embedclf.bench.heads import VARIANTS, cross_validate, parse_variants
from embedclf.training.trainer import TrainParams, train_head

BASE = TrainParams(hidden_dim=32, num_layers=2, epochs=20, batch_size=32, lr=3e-3)


def blobs(n_per: int = 30, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, dim)) * 3.0
    X = np.concatenate([c + 1.5 * rng.normal(size=(n_per, dim)) for c in centers]).astype(np.float32)
    y = [f"l{i}" for i in range(4) for _ in range(n_per)]
    return X, y


def test_folds_are_paired_and_scored_on_held_out_texts():
    X, y = blobs()
    seen = []
    r = cross_validate(X, y, ["mlp", "mlp+linear", "linear"], folds=3, base=BASE, on_fold=seen.append)
    assert r["folds"] == 3 and r["n"] == 120 and r["n_labels"] == 4 and r["reference"] == "mlp"
    assert len(seen) == 9 and {s["variant"] for s in seen} == {"mlp", "mlp+linear", "linear"}
    ref = r["variants"]["mlp"]
    assert ref["mean_diff"] == 0.0 and ref["folds_not_worse"] == 3
    for name, v in r["variants"].items():
        assert len(v["fold_accuracy"]) == 3
        assert v["mean_accuracy"] == pytest.approx(np.mean(v["fold_accuracy"]), abs=1e-4)
        diffs = np.array(v["fold_accuracy"]) - np.array(ref["fold_accuracy"])
        assert v["mean_diff"] == pytest.approx(diffs.mean(), abs=1e-4)
        assert v["folds_not_worse"] == int((diffs >= -1e-9).sum())
        assert min(v["fold_accuracy"]) > 0.5  # 4 labels: chance is 0.25
    # fold 0 of "linear", recomputed by hand: trained on the other folds, scored on fold 0 only
    tr, te = next(StratifiedKFold(3, shuffle=True, random_state=123).split(X, y))
    res = train_head(X[tr], [y[i] for i in tr], TrainParams(**{**BASE.to_dict(), **VARIANTS["linear"]}))
    pred = np.asarray(res.labels)[res.head.predict_proba(X[te]).argmax(1)]
    assert r["variants"]["linear"]["fold_accuracy"][0] == round(float((pred == np.asarray(y)[te]).mean()), 4)


def test_cross_validation_is_reproducible():
    X, y = blobs(seed=2)
    a = cross_validate(X, y, ["mlp+linear"], folds=2, base=BASE)
    b = cross_validate(X, y, ["mlp+linear"], folds=2, base=BASE)
    assert a["variants"]["mlp+linear"]["fold_accuracy"] == b["variants"]["mlp+linear"]["fold_accuracy"]


def test_rejects_too_few_texts_per_label_and_bad_variants():
    X, y = blobs(n_per=3)
    with pytest.raises(ValueError, match="at least 5"):
        cross_validate(X, y, ["mlp"], folds=5, base=BASE)
    assert parse_variants("mlp+linear, linear") == ["mlp+linear", "linear"]
    with pytest.raises(ValueError, match="unknown head variant"):
        parse_variants("mlp,bogus")
    with pytest.raises(ValueError, match="twice"):
        parse_variants("mlp,mlp")
    with pytest.raises(ValueError):
        parse_variants(" , ")


def test_shared_training_gives_the_same_accuracies_as_separate_trainings():
    """mlp+linear / +tfidf / +tfidf-fit share one training per fold; their figures must not change."""
    import torch

    from embedclf.embedders.fake import FakeEmbedder
    from embedclf.training.trainer import TrainParams
    from tests.training.textdata import make_texts

    torch.set_num_threads(1)
    texts, labels = make_texts(12, seed=3)
    X = FakeEmbedder(8).embed_batch(texts)
    names = ["mlp+linear", "mlp+linear+tfidf", "mlp+linear+tfidf-fit", "linear"]
    base = TrainParams(hidden_dim=16, epochs=3, tfidf_epochs=3)
    shared = cross_validate(X, labels, names, folds=2, base=base, texts=texts)
    alone = cross_validate(X, labels, names, folds=2, base=base, texts=texts, share=False)
    for name in names:
        assert shared["variants"][name]["fold_accuracy"] == alone["variants"][name]["fold_accuracy"], name
    with pytest.raises(ValueError, match="need the texts"):
        cross_validate(X, labels, names, folds=2, base=base)
