"""HeadArtifact: weights + config roundtrips, safetensors format, validation."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load

from embedclf.heads.checkpoint import (
    FORMAT_VERSION,
    HeadArtifact,
    head_from_weights,
    same_weights,
    weights_to_bytes,
)
from embedclf.heads.mlp import HeadConfig, MLPHead

LABELS = ["billing", "bug", "feature", "other"]


@pytest.fixture
def head() -> MLPHead:
    torch.manual_seed(7)
    h = MLPHead(HeadConfig(input_dim=12, num_labels=4, hidden_dim=16, num_layers=2))
    h.set_center(torch.randn(20, 12))
    h.temperature.fill_(1.7)  # non-default buffers must survive the roundtrip too
    h.eval()
    return h


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(9, 12)).astype(np.float32)


def test_weights_roundtrip_gives_identical_probabilities(head, x):
    rebuilt = head_from_weights(head.config, weights_to_bytes(head))
    assert same_weights(head, rebuilt)
    np.testing.assert_array_equal(rebuilt.predict_proba(x), head.predict_proba(x))
    assert float(rebuilt.temperature) == pytest.approx(1.7)
    assert not rebuilt.training


def test_weights_blob_is_safetensors_not_pickle(head):
    blob = weights_to_bytes(head)
    assert isinstance(blob, bytes)
    assert not blob.startswith(b"\x80"), "looks like a pickle protocol header"
    with pytest.raises((pickle.UnpicklingError, EOFError, ValueError)):
        pickle.loads(blob)
    # safetensors layout: 8-byte little-endian header length, then a JSON header
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    assert set(head.state_dict()) <= set(header)
    tensors = st_load(blob)
    assert set(tensors) == set(head.state_dict())
    for k, v in head.state_dict().items():
        assert torch.equal(tensors[k], v)


def test_artifact_build_roundtrip(head, x):
    art = HeadArtifact.from_head(head, LABELS, "fake:12", metrics={"accuracy": 0.9})
    assert art.labels == LABELS and art.embedder_id == "fake:12"
    assert art.metrics == {"accuracy": 0.9}
    np.testing.assert_array_equal(art.build().predict_proba(x), head.predict_proba(x))


def test_save_dir_load_dir_roundtrip(head, x, tmp_path):
    art = HeadArtifact.from_head(
        head, LABELS, "fake:12", metrics={"accuracy": 0.5}, train_params={"epochs": 3, "lr": 0.01}
    )
    out = art.save_dir(tmp_path / "nested" / "head")
    assert (out / "config.json").is_file() and (out / "head.safetensors").is_file()
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == FORMAT_VERSION
    assert meta["labels"] == LABELS

    loaded = HeadArtifact.load_dir(out)
    assert loaded.config == art.config
    assert loaded.labels == LABELS
    assert loaded.embedder_id == "fake:12"
    assert loaded.metrics == {"accuracy": 0.5}
    assert loaded.train_params == {"epochs": 3, "lr": 0.01}
    assert loaded.weights == art.weights
    np.testing.assert_array_equal(loaded.build().predict_proba(x), head.predict_proba(x))


def test_load_dir_rejects_unknown_format(head, tmp_path):
    out = HeadArtifact.from_head(head, LABELS, "fake:12").save_dir(tmp_path)
    meta = json.loads((out / "config.json").read_text())
    meta["format"] = FORMAT_VERSION + 1
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format"):
        HeadArtifact.load_dir(out)


@pytest.mark.parametrize("labels", [LABELS[:3], LABELS + ["extra"]])
def test_label_count_mismatch_raises(head, labels):
    with pytest.raises(ValueError, match="label"):
        HeadArtifact.from_head(head, labels, "fake:12")


def test_duplicate_labels_raise(head):
    with pytest.raises(ValueError, match="duplicate"):
        HeadArtifact.from_head(head, ["a", "b", "a", "c"], "fake:12")


def test_weights_do_not_load_into_a_different_architecture(head):
    blob = weights_to_bytes(head)
    other = HeadConfig(input_dim=12, num_labels=4, hidden_dim=16, num_layers=3)
    with pytest.raises(RuntimeError):
        head_from_weights(other, blob)


def test_same_weights_detects_a_change(head):
    clone = head_from_weights(head.config, weights_to_bytes(head))
    assert same_weights(head, clone)
    with torch.no_grad():
        next(clone.parameters())[0, 0] += 1e-3
    assert not same_weights(head, clone)


def test_two_member_head_roundtrips_with_its_member_temperatures(x, tmp_path):
    torch.manual_seed(3)
    h = MLPHead(HeadConfig(input_dim=12, num_labels=4, hidden_dim=16, num_layers=2, linear_member=True))
    h.set_center(torch.randn(20, 12))
    with torch.no_grad():
        h.linear.weight.normal_()
        h.member_temperature.copy_(torch.tensor([0.6, 1.4]))
    h.temperature.fill_(0.9)
    h.eval()
    loaded = HeadArtifact.load_dir(HeadArtifact.from_head(h, LABELS, "fake:12").save_dir(tmp_path)).build()
    assert loaded.config.linear_member and same_weights(h, loaded)
    assert loaded.member_temperature.tolist() == pytest.approx([0.6, 1.4])
    np.testing.assert_array_equal(loaded.predict_proba(x), h.predict_proba(x))
    # a one-member config refuses the two-member weights (strict load), and vice versa
    with pytest.raises(RuntimeError):
        head_from_weights(HeadConfig(input_dim=12, num_labels=4, hidden_dim=16, num_layers=2), weights_to_bytes(h))
    one = MLPHead(HeadConfig(input_dim=12, num_labels=4, hidden_dim=16, num_layers=2))
    with pytest.raises(RuntimeError):
        head_from_weights(h.config, weights_to_bytes(one))
