"""The multi-label head: config, probabilities, decisions, strict save/load next to single-label heads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from embedclf.heads.checkpoint import HeadArtifact, config_from_dict
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.heads.multilabel import MultiLabelConfig, MultiLabelHead, is_multi_label, label_rows


def _head(seed: int = 0, linear: bool = True) -> MultiLabelHead:
    torch.manual_seed(seed)
    cfg = MultiLabelConfig(input_dim=16, num_labels=4, hidden_dim=8, linear_member=linear,
                           member_weights=(0.7, 0.3) if linear else (1.0,), thresholds=(0.5, 0.4, 0.6, 0.55))
    head = MultiLabelHead(cfg)
    head.set_center(torch.randn(20, 16))
    if head.linear is not None:
        with torch.no_grad():
            head.linear.weight.normal_()
    return head.eval()


def test_config_round_trip_and_validation():
    cfg = _head().config
    d = cfg.to_dict()
    assert d["head_type"] == "multi_label" and d["thresholds"] == [0.5, 0.4, 0.6, 0.55]
    assert MultiLabelConfig.from_dict(d) == cfg and config_from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown"):
        MultiLabelConfig.from_dict(d | {"extra": 1})
    with pytest.raises(ValueError, match="one value per label"):
        dataclasses.replace(cfg, thresholds=(0.5,))
    with pytest.raises(ValueError, match="sum to 1"):
        dataclasses.replace(cfg, member_weights=(0.7, 0.7))
    with pytest.raises(ValueError, match="head_type"):
        MultiLabelConfig.from_dict(d | {"head_type": "softmax"})


def test_single_label_configs_still_load_strictly():
    d = HeadConfig(input_dim=8, num_labels=3).to_dict()
    assert isinstance(config_from_dict(d), HeadConfig)
    with pytest.raises(ValueError, match="unknown head config keys"):
        config_from_dict(d | {"thresholds": [0.5, 0.5, 0.5]})


def test_probabilities_are_the_weighted_sigmoid_mix():
    head = _head()
    x = np.random.default_rng(1).normal(size=(5, 16)).astype(np.float32)
    mlp, lin = head.member_proba(x)
    p = head.predict_proba(x)
    np.testing.assert_allclose(p, 0.7 * mlp + 0.3 * lin, rtol=1e-5, atol=1e-6)
    assert p.shape == (5, 4) and ((p >= 0) & (p <= 1)).all()
    assert (head.predict(x) == (p >= np.array([0.5, 0.4, 0.6, 0.55]))).all()
    with pytest.raises(ValueError, match="shape"):
        head.predict_proba(np.zeros((2, 3)))


def test_save_load_round_trip(tmp_path):
    head = _head(linear=True)
    art = HeadArtifact.from_head(head, ["a", "b", "c", "d"], "fake:16")
    loaded = HeadArtifact.load_dir(art.save_dir(tmp_path / "h"))
    assert is_multi_label(loaded.config) and loaded.config == head.config
    module = loaded.build()
    assert isinstance(module, MultiLabelHead) and is_multi_label(module)
    x = np.random.default_rng(2).normal(size=(7, 16)).astype(np.float32)
    np.testing.assert_array_equal(module.predict_proba(x), head.predict_proba(x))
    # weights of a head without the linear member do not load into one with it (strict)
    small = HeadArtifact.from_head(_head(linear=False), ["a", "b", "c", "d"], "fake:16")
    with pytest.raises(RuntimeError):
        dataclasses.replace(small, config=head.config).build()


def test_single_label_artifact_unchanged(tmp_path):
    torch.manual_seed(0)
    head = MLPHead(HeadConfig(input_dim=8, num_labels=3, hidden_dim=4)).eval()
    loaded = HeadArtifact.load_dir(HeadArtifact.from_head(head, ["x", "y", "z"], "fake:8").save_dir(tmp_path))
    module = loaded.build()
    assert isinstance(module, MLPHead) and not is_multi_label(module)


def test_label_rows_lists_labels_over_threshold_best_first():
    proba = np.array([[0.9, 0.2, 0.7, 0.1], [0.3, 0.35, 0.1, 0.2], [0.6, 0.65, 0.1, 0.0]])
    t = np.array([0.5, 0.4, 0.6, 0.5])
    rows = label_rows(proba, ["a", "b", "c", "d"], t)
    assert rows[0]["labels"] == [{"label": "a", "score": 0.9}, {"label": "c", "score": 0.7}]
    assert rows[0]["label"] == "a" and rows[0]["score"] == pytest.approx(0.9) and not rows[0]["abstained"]
    # nothing over its threshold: abstained, no label, score = top probability, top-3 kept
    assert rows[1]["abstained"] and rows[1]["label"] is None and rows[1]["labels"] == []
    assert rows[1]["score"] == pytest.approx(0.35)
    assert [x["label"] for x in rows[1]["top3"]] == ["b", "a", "d"]
    # the best label is the most probable of those over their thresholds
    assert rows[2]["label"] == "b" and [x["label"] for x in rows[2]["labels"]] == ["b", "a"]


def test_sparse_member_round_trip_is_strict(tmp_path):
    from embedclf.embedders.fake import FakeEmbedder
    from embedclf.training.multilabel import MultiLabelParams, train_multilabel
    from tests.helpers import multilabel_texts

    emb = FakeEmbedder(32)
    texts, sets = multilabel_texts(200, seed=3)
    r = train_multilabel(emb.embed(texts), sets, MultiLabelParams(epochs=3, hidden_dim=16, sparse_member=True,
                                                                  sparse_max_features=500), texts=texts)
    art = HeadArtifact.from_head(r.head, r.labels, emb.model_id)
    loaded = HeadArtifact.load_dir(art.save_dir(tmp_path / "s"))
    assert loaded.config.sparse == r.head.config.sparse
    module = loaded.build()
    new, _ = multilabel_texts(20, seed=4)
    x = emb.embed(new)
    np.testing.assert_array_equal(module.predict_proba(x, new), r.head.predict_proba(x, new))
    # no featurizer tensors with a sparse config, or extra ones without: refused
    plain = dataclasses.replace(r.head.config, sparse=None, member_weights=(0.5, 0.5))
    with pytest.raises(RuntimeError, match="TF-IDF"):
        dataclasses.replace(art, config=plain).build()
    dense = HeadArtifact.from_head(_head(), ["a", "b", "c", "d"], "fake:16")
    with pytest.raises(ValueError, match="tfidf"):
        dataclasses.replace(dense, config=dataclasses.replace(
            dense.config, sparse=r.head.config.sparse, member_weights=(0.4, 0.3, 0.3))).build()


def test_min_and_max_labels_rules():
    from embedclf.heads.mldecide import decide

    proba = np.array([[0.9, 0.2, 0.7, 0.6], [0.3, 0.35, 0.1, 0.2], [0.6, 0.65, 0.1, 0.0]])
    t = np.array([0.5, 0.4, 0.6, 0.5])
    plain = decide(proba, t)
    assert plain.tolist() == [[True, False, True, True], [False, False, False, False], [True, True, False, False]]
    assert (decide(proba, t, 0, 0) == plain).all()
    # at least the top label: only the text with none over its threshold changes
    assert decide(proba, t, min_labels=1).tolist() == [[True, False, True, True], [False, True, False, False],
                                                      [True, True, False, False]]
    # at most 2: the least probable of the first text's three goes
    assert decide(proba, t, max_labels=2).tolist() == [[True, False, True, False], [False] * 4,
                                                      [True, True, False, False]]
    rows = label_rows(proba, ["a", "b", "c", "d"], t, min_labels=1, max_labels=1)
    assert [r["label"] for r in rows] == ["a", "b", "b"] and not any(r["abstained"] for r in rows)
    assert [len(r["labels"]) for r in rows] == [1, 1, 1]


def test_decision_rule_is_stored_and_old_configs_decide_as_before(tmp_path):
    head = _head()
    d = head.config.to_dict()
    assert d["min_labels"] == 0 and d["max_labels"] == 0
    legacy = {k: v for k, v in d.items() if k not in ("min_labels", "max_labels")}  # stored before the rule
    assert MultiLabelConfig.from_dict(legacy) == head.config
    head.config = dataclasses.replace(head.config, min_labels=1, max_labels=2)
    art = HeadArtifact.from_head(head, ["a", "b", "c", "d"], "fake:16")
    module = HeadArtifact.load_dir(art.save_dir(tmp_path / "r")).build()
    assert (module.config.min_labels, module.config.max_labels) == (1, 2)
    x = np.random.default_rng(5).normal(size=(30, 16)).astype(np.float32)
    counts = module.predict(x).sum(1)
    assert counts.min() >= 1 and counts.max() <= 2
    for bad in ({"min_labels": 3, "max_labels": 2}, {"min_labels": -1}, {"max_labels": 5}):
        with pytest.raises(ValueError, match="min_labels"):
            dataclasses.replace(head.config, **bad)
