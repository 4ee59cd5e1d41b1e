"""The second training stage (finish_head): fixed mixing weights, refit of the convex members, one stage
finished several ways giving exactly what train_head gives alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedclf.embedders.fake import FakeEmbedder
from embedclf.training.finish import finish_head
from embedclf.training.trainer import TrainParams, fixed_weights, train_dense, train_head
from tests.training.textdata import make_texts

FAST = dict(hidden_dim=16, num_layers=2, epochs=4, batch_size=32, tfidf_epochs=5, tfidf_member=True)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    texts, labels = make_texts(15, seed=5)
    return FakeEmbedder(8).embed_batch(texts), labels, texts


def test_fixed_weights_parse_and_validate():
    assert fixed_weights("equal") is None and fixed_weights("fit") is None
    assert fixed_weights("0.25/0.25/0.5") == (0.25, 0.25, 0.5)
    for bad in ("0.5/0.6", "1", "a/b", "-0.5/1.5", ""):
        with pytest.raises(ValueError, match="member_weights"):
            TrainParams(member_weights=bad)


def test_fixed_weights_are_stored_and_checked_against_the_members(data):
    X, labels, texts = data
    r = train_head(X, labels, TrainParams(**FAST, member_weights="0.2/0.3/0.5"), texts=texts)
    np.testing.assert_allclose(r.head.member_weight.numpy(), [0.2, 0.3, 0.5], atol=1e-7)
    assert [r.members[m]["weight"] for m in ("mlp", "linear", "tfidf")] == [0.2, 0.3, 0.5]
    with pytest.raises(ValueError, match="2 weights for 3 members"):
        train_head(X, labels, TrainParams(**FAST, member_weights="0.5/0.5"), texts=texts)


def test_one_stage_finished_several_ways_equals_separate_trainings(data):
    X, labels, texts = data
    stage = train_dense(X, labels, TrainParams(**FAST), texts=texts)
    before = {k: v.clone() for k, v in stage.head.state_dict().items()}
    memo: dict = {}
    for extra in ({}, {"member_weights": "fit"}, {"refit": True}, {"tfidf_alpha": 3e-5}, {"tfidf_member": False}):
        params = TrainParams(**{**FAST, **extra})
        shared = finish_head(stage, params, memo)
        alone = train_head(X, labels, params, texts=texts)
        np.testing.assert_array_equal(shared.head.predict_proba(X, texts), alone.head.predict_proba(X, texts))
        assert shared.members == alone.members and shared.val_metrics == alone.val_metrics
    for k, v in stage.head.state_dict().items():  # the stage itself is never modified
        assert torch.equal(v, before[k]), k


def test_refit_changes_the_convex_members_only_and_keeps_the_validation_view(data):
    X, labels, texts = data
    plain = train_head(X, labels, TrainParams(**FAST), texts=texts)
    refit = train_head(X, labels, TrainParams(**FAST, refit=True), texts=texts)
    # validation logits (for abstention thresholds) and figures come from the head before the refit
    np.testing.assert_array_equal(plain.val_logits, refit.val_logits)
    assert plain.val_metrics == refit.val_metrics and plain.temperature == refit.temperature
    assert torch.equal(plain.head.mlp[0].weight, refit.head.mlp[0].weight)
    assert not torch.equal(plain.head.linear.weight, refit.head.linear.weight)
    assert not torch.equal(plain.head.sparse.weight, refit.head.sparse.weight)
    assert refit.members["tfidf"]["refit_on"] == len(X)
    # with the caller's validation set there is nothing to add: refit is a no-op
    tr, va = np.arange(0, len(X), 2), np.arange(1, len(X), 2)
    pick = lambda xs, idx: [xs[i] for i in idx]  # noqa: E731
    val = (X[va], pick(labels, va))
    a, b = (train_head(X[tr], pick(labels, tr), TrainParams(**FAST, refit=refit), val=val, texts=pick(texts, tr),
                       val_texts=pick(texts, va)) for refit in (False, True))
    np.testing.assert_array_equal(a.head.predict_proba(X, texts), b.head.predict_proba(X, texts))


KNN = dict(FAST, knn_k=3)


def test_knn_member_gets_its_weight_and_the_training_vectors(data):
    X, labels, texts = data
    r = train_head(X, labels, TrainParams(**KNN, knn_member="on", knn_weight=0.4), texts=texts)
    assert r.head.member_names == ["mlp", "linear", "tfidf", "knn"]
    np.testing.assert_allclose(r.head.member_weight.numpy(), [0.2, 0.2, 0.2, 0.4], atol=1e-6)
    assert r.knn_choice == {"mode": "on", "kept": True}
    n_val = len(r.val_y)
    assert r.head.config.knn["n_vectors"] == len(X) - n_val  # the training part only: validation is scored
    refit = train_head(X, labels, TrainParams(**KNN, knn_member="on", refit=True), texts=texts)
    assert refit.head.config.knn["n_vectors"] == len(X) and refit.members["knn"]["refit_on"] == len(X)
    # fixed weights for the other members are scaled to leave the kNN member its share
    fixed = train_head(X, labels, TrainParams(**KNN, knn_member="on", member_weights="0.5/0.25/0.25"), texts=texts)
    np.testing.assert_allclose(fixed.head.member_weight.numpy(), [0.35, 0.175, 0.175, 0.3], atol=1e-6)


def test_knn_auto_keeps_the_member_only_when_it_lowers_the_validation_nll(data):
    X, labels, texts = data
    stage = train_dense(X, labels, TrainParams(**KNN), texts=texts)
    memo: dict = {}
    off, on, auto = (finish_head(stage, TrainParams(**KNN, knn_member=m), memo) for m in ("off", "on", "auto"))
    yv = torch.from_numpy(off.val_y)

    def nll(r) -> float:
        return float(torch.nn.functional.cross_entropy(torch.from_numpy(r.val_logits) / r.temperature, yv))

    choice = auto.knn_choice
    assert choice["mode"] == "auto" and choice["kept"] is (nll(on) < nll(off))
    assert choice["val_nll_with"] == round(nll(on), 5) and choice["val_nll_without"] == round(nll(off), 5)
    same = on if choice["kept"] else off
    np.testing.assert_array_equal(auto.head.predict_proba(X, texts), same.head.predict_proba(X, texts))
    assert ("knn" in auto.head.member_names) is choice["kept"]


def test_knn_auto_decides_on_the_validation_split_both_ways():
    """Two data sets built so that the vote helps on one and hurts on the other: auto follows the NLL."""
    rng = np.random.default_rng(0)
    # tight clusters, each label made of several far-apart clusters: neighbours know, a linear map does not
    centers = rng.normal(size=(12, 6)) * 3
    lab = np.arange(12) % 3
    X = np.concatenate([c + 0.05 * rng.normal(size=(40, 6)) for c in centers]).astype(np.float32)
    y = [str(v) for v in np.repeat(lab, 40)]
    params = TrainParams(hidden_dim=8, num_layers=2, epochs=3, knn_member="auto", knn_k=5, linear_member=True)
    helps = train_head(X, y, params)
    assert helps.knn_choice["kept"] is True
    # labels drawn at random: the neighbours' vote is noise the calibrated head is better without
    noisy = [str(v) for v in rng.integers(0, 3, size=len(X))]
    hurts = train_head(rng.normal(size=X.shape).astype(np.float32), noisy, params)
    assert hurts.knn_choice["kept"] is False and "knn" not in hurts.head.member_names


def test_refit_mlp_retrains_the_mlp_on_all_rows_for_the_chosen_epochs(data):
    _, labels, texts = data
    names = sorted(set(labels))
    rng = np.random.default_rng(0)  # separable vectors: an MLP that trained at all gets them right
    centroids = rng.normal(size=(len(names), 8))
    X = (centroids[[names.index(v) for v in labels]] + 0.3 * rng.normal(size=(len(labels), 8))).astype(np.float32)
    params = dict(FAST, epochs=20, refit=True)
    refit = train_head(X, labels, TrainParams(**params), texts=texts)
    both = train_head(X, labels, TrainParams(**params, refit_mlp=True), texts=texts)
    # the validation view (thresholds, reported figures) is the head before any refit, as with refit alone
    np.testing.assert_array_equal(refit.val_logits, both.val_logits)
    assert not torch.equal(refit.head.mlp[0].weight, both.head.mlp[0].weight)
    assert torch.equal(refit.head.linear.weight, both.head.linear.weight)  # the other refits are unchanged
    assert both.members["mlp"]["refit_on"] == len(X) and "refit_on" not in refit.members["mlp"]
    assert both.members["mlp"]["refit_epochs"] == both.members["mlp"]["best_epoch"]
    # the retrained MLP learned the rows (it is not left at a fresh, untrained start)
    y = np.array([both.labels.index(v) for v in labels])
    with torch.no_grad():
        acc = [float((r.head.mlp_logits(torch.from_numpy(X)).argmax(1).numpy() == y).mean()) for r in (refit, both)]
    assert acc[1] > 0.7 and acc[1] >= acc[0] - 0.1, acc  # chance: 0.2
    again = train_head(X, labels, TrainParams(**params, refit_mlp=True), texts=texts)
    assert torch.equal(again.head.mlp[0].weight, both.head.mlp[0].weight)  # deterministic for a seed
