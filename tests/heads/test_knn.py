"""The kNN member: its vote (checked against a direct numpy computation), its config checks, its place in
a head's mix, and a stored head with it (safetensors + JSON round trip, strict loading, old heads untouched)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from embedclf.errors import HeadLoadError
from embedclf.heads.checkpoint import HeadArtifact, head_from_weights, weights_to_bytes
from embedclf.heads.knn import FLOOR, KnnMember, check_config, make_config
from embedclf.heads.mlp import HeadConfig, MLPHead

DIM, LABELS = 12, 4


@pytest.fixture
def train_x() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(40, DIM)).astype(np.float32)


@pytest.fixture
def train_y() -> np.ndarray:
    return np.random.default_rng(4).integers(0, LABELS, size=40)


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(2).normal(size=(25, DIM)).astype(np.float32)


def numpy_vote(train_x, train_y, x, k, temp):
    tn = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    tn = tn.astype(np.float16).astype(np.float64)  # stored as float16
    s = xn @ tn.T
    out = np.zeros((len(x), LABELS))
    for i in range(len(x)):
        for j in np.argsort(-s[i])[:k]:
            out[i, train_y[j]] += np.exp((s[i, j] - 1) / temp)
    return out / out.sum(1, keepdims=True)


def member(train_x, train_y, k=5, temp=0.1) -> KnnMember:
    m = KnnMember(make_config(k, temp, len(train_x)), DIM, LABELS)
    m.set_vectors(torch.from_numpy(train_x), torch.from_numpy(train_y))
    return m


def test_vote_matches_a_direct_computation(train_x, train_y, x):
    m = member(train_x, train_y)
    got = m.logits(torch.from_numpy(x)).numpy()
    expected = numpy_vote(train_x, train_y, x, 5, 0.1)
    np.testing.assert_allclose(np.exp(got) - FLOOR, expected, atol=2e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_a_training_text_is_voted_for_its_own_label(train_x, train_y):
    m = member(train_x, train_y, k=3, temp=0.02)
    assert (m.logits(torch.from_numpy(train_x)).argmax(1).numpy() == train_y).all()


def test_k_larger_than_the_stored_vectors_uses_them_all(train_x, train_y, x):
    m = member(train_x[:4], train_y[:4], k=10)
    np.testing.assert_allclose(np.exp(m.logits(torch.from_numpy(x)).numpy()) - FLOOR,
                               numpy_vote(train_x[:4], train_y[:4], x, 4, 0.1), atol=2e-4)


def test_chunks_give_the_same_vote_as_one_pass(train_x, train_y, monkeypatch):
    big = np.random.default_rng(5).normal(size=(1200, DIM)).astype(np.float32)
    m = member(train_x, train_y)
    whole = m.logits(torch.from_numpy(big))
    monkeypatch.setattr("embedclf.heads.knn.CHUNK", 7)
    torch.testing.assert_close(m.logits(torch.from_numpy(big)), whole)


@pytest.mark.parametrize("bad", [
    None, [], {"kind": "knn-vote", "k": 3, "temp": 0.1},
    {"kind": "other", "k": 3, "temp": 0.1, "n_vectors": 5},
    {"kind": "knn-vote", "k": 0, "temp": 0.1, "n_vectors": 5},
    {"kind": "knn-vote", "k": True, "temp": 0.1, "n_vectors": 5},
    {"kind": "knn-vote", "k": 3, "temp": 0, "n_vectors": 5},
    {"kind": "knn-vote", "k": 3, "temp": float("nan"), "n_vectors": 5},
    {"kind": "knn-vote", "k": 3, "temp": 0.1, "n_vectors": 2.5},
    {"kind": "knn-vote", "k": 3, "temp": 0.1, "n_vectors": 5, "extra": 1},
])
def test_bad_configs_are_refused(bad):
    with pytest.raises(HeadLoadError):
        check_config(bad)
    if isinstance(bad, dict):
        with pytest.raises(ValueError):
            HeadConfig(input_dim=DIM, num_labels=LABELS, knn=bad)


def test_labels_out_of_range_are_refused(train_x):
    m = KnnMember(make_config(3, 0.1, 40), DIM, LABELS)
    with pytest.raises(ValueError, match="class indices"):
        m.set_vectors(torch.from_numpy(train_x), torch.full((40,), LABELS))


@pytest.fixture
def head(train_x, train_y) -> MLPHead:
    torch.manual_seed(3)
    h = MLPHead(HeadConfig(input_dim=DIM, num_labels=LABELS, hidden_dim=16, num_layers=2, linear_member=True,
                           knn=make_config(5, 0.1, 1)))
    h.set_center(torch.from_numpy(train_x))
    h.set_knn(train_x, train_y)
    with torch.no_grad():
        h.member_temperature.copy_(torch.tensor([1.5, 0.8, 0.6]))
        h.member_weight.copy_(torch.tensor([0.35, 0.35, 0.3]))
        h.temperature.fill_(1.2)
    h.eval()
    return h


def test_head_mixes_the_vote_with_its_weight(head, x):
    """p = softmax(log(sum_k w_k softmax(z_k / t_k)) / T), the kNN member one of the k."""
    assert head.member_names == ["mlp", "linear", "knn"] and head.weighted
    assert head.config.knn == make_config(5, 0.1, 40)
    t = torch.from_numpy(x)
    with torch.no_grad():
        zs = [head.mlp_logits(t), head.linear_logits(t), head.knn.logits(t)]
    mixed = sum(w * torch.softmax(z / tk, -1) for w, z, tk in zip([0.35, 0.35, 0.3], zs, [1.5, 0.8, 0.6]))
    expected = torch.softmax(torch.log(mixed) / 1.2, -1).numpy()
    np.testing.assert_allclose(head.predict_proba(x), expected, rtol=1e-5, atol=1e-6)


def test_set_knn_replaces_the_vectors_and_records_their_number(head, train_x, train_y):
    head.set_knn(train_x[:10], train_y[:10])
    assert head.knn.vectors.shape == (10, DIM) and head.config.knn["n_vectors"] == 10
    assert head.config.knn["k"] == 5 and head.config.knn["temp"] == 0.1


def test_stored_head_round_trip_predicts_identically(head, x, tmp_path):
    art = HeadArtifact.from_head(head, ["a", "b", "c", "d"], "fake:12")
    meta = json.loads(json.dumps(art.meta()))
    assert meta["config"]["knn"] == make_config(5, 0.1, 40)
    tensors = st_load(art.weights)
    assert tensors["knn.vectors"].dtype == torch.float16 and tensors["knn.labels"].dtype == torch.int64
    loaded = HeadArtifact.load_dir(art.save_dir(tmp_path / "h")).build()
    np.testing.assert_array_equal(loaded.predict_proba(x), head.predict_proba(x))


def test_loading_is_strict_about_the_knn_tensors(head):
    blob = weights_to_bytes(head)
    tensors = st_load(blob)
    without = {k: v for k, v in tensors.items() if k != "knn.labels"}
    with pytest.raises(RuntimeError, match="knn.labels"):
        head_from_weights(head.config, st_save(without))
    plain = dataclasses.replace(head.config, knn=None)
    with pytest.raises(RuntimeError, match="knn"):
        head_from_weights(plain, blob)
    wrong = dataclasses.replace(head.config, knn=make_config(5, 0.1, 39))
    with pytest.raises(RuntimeError, match="size mismatch"):
        head_from_weights(wrong, blob)


def test_heads_without_a_knn_member_store_no_tensor_and_keep_a_plain_average(train_x, x):
    h = MLPHead(HeadConfig(input_dim=DIM, num_labels=LABELS, hidden_dim=16, num_layers=2, linear_member=True))
    assert h.config.to_dict()["knn"] is None and not h.weighted
    assert not any(k.startswith("knn.") or k == "member_weight" for k in st_load(weights_to_bytes(h)))


@pytest.mark.parametrize(("fast", "ort"), [(False, False), (False, True), (True, False)])
def test_every_search_path_gives_the_direct_vote(train_x, train_y, x, fast, ort, monkeypatch):
    """bfloat16 candidates rescored in float32, or a float32 search (torch's or ONNX Runtime's): the same
    neighbours and weights."""
    monkeypatch.setattr("embedclf.heads.knn._bf16", fast)
    monkeypatch.setattr("embedclf.heads.nearest._ort", ort)
    rng = np.random.default_rng(7)
    big_x = rng.normal(size=(3000, DIM)).astype(np.float32)
    big_y = rng.integers(0, LABELS, size=3000)
    m = KnnMember(make_config(10, 0.05, 3000), DIM, LABELS)
    m.set_vectors(torch.from_numpy(big_x), torch.from_numpy(big_y))
    got = m.logits(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.exp(got) - FLOOR, numpy_vote(big_x, big_y, x, 10, 0.05), atol=2e-4)
    table = m._table
    kind = "bf16" if isinstance(table, torch.Tensor) and table.dtype == torch.bfloat16 else type(table).__name__
    assert kind == ("bf16" if fast else "OrtSearch" if ort else "TorchSearch")


def test_bf16_and_f32_paths_pick_the_same_neighbours_on_a_real_sized_table(monkeypatch):
    """Same neighbours for every row; their float32 cosines (rescored on one path, straight from the product on
    the other) differ only by the order of the additions, and so do the votes."""
    rng = np.random.default_rng(8)
    vecs = torch.from_numpy(rng.normal(size=(5000, 64)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 20, size=5000))
    q = torch.from_numpy(rng.normal(size=(300, 64)).astype(np.float32))
    out, nbrs = {}, {}
    monkeypatch.setattr("embedclf.heads.nearest._ort", False)
    for fast in (False, True):
        monkeypatch.setattr("embedclf.heads.knn._bf16", fast)
        m = KnnMember(make_config(10, 0.05, 5000), 64, 20)
        m.set_vectors(vecs, labels)
        out[fast] = m.logits(q)
        sims, idx = m.neighbours(torch.nn.functional.normalize(q, dim=-1))
        order = torch.argsort(idx, dim=1)
        nbrs[fast] = (idx.gather(1, order), sims.gather(1, order))
    assert torch.equal(nbrs[True][0], nbrs[False][0])
    torch.testing.assert_close(nbrs[True][1], nbrs[False][1], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[True], out[False], rtol=0, atol=2e-5)


def test_use_bf16_is_decided_once(monkeypatch):
    from embedclf.heads import knn

    monkeypatch.setattr(knn, "_bf16", None)
    first = knn.use_bf16()
    assert isinstance(first, bool) and knn._bf16 is first and knn.use_bf16() is first
