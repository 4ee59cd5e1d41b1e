"""The exact float32 nearest-vector search behind the kNN member and the OOS score: torch's and ONNX Runtime's
engines against a float64 reference, edge shapes, the engine's thread count, and the once-per-process choice."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from embedclf.heads import nearest
from embedclf.heads.knn import KnnMember, make_config
from embedclf.heads.nearest import OrtSearch, TorchSearch, make_search


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture
def table() -> torch.Tensor:
    """2,000 unit rows stored as float16, as heads store them."""
    return torch.from_numpy(unit(np.random.default_rng(5).normal(size=(2000, 48)))).half()


@pytest.fixture
def z() -> torch.Tensor:
    return torch.from_numpy(unit(np.random.default_rng(6).normal(size=(130, 48))).astype(np.float32))


@pytest.mark.parametrize("engine", [TorchSearch, OrtSearch])
@pytest.mark.parametrize("k", [1, 10, 2000])
def test_both_engines_find_the_exact_neighbours(engine, k, table, z):
    values, indices = engine(table).search(z, k)
    assert values.dtype == torch.float32 and indices.dtype == torch.int64
    assert values.shape == indices.shape == (len(z), k)
    sims = z.double().numpy() @ table.double().numpy().T
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    # the same set of neighbours per row (random data: no ties), largest first, with their float32 cosines
    np.testing.assert_array_equal(np.sort(indices.numpy(), axis=1), np.sort(expected, axis=1))
    assert (values[:, :-1] >= values[:, 1:]).all()
    np.testing.assert_allclose(values.numpy(), np.take_along_axis(sims, indices.numpy(), 1), atol=1e-6)


def test_the_engines_agree_to_float32_rounding(table, z):
    (tv, ti), (ov, oi) = TorchSearch(table).search(z, 10), OrtSearch(table).search(z, 10)
    assert torch.equal(ti, oi)
    torch.testing.assert_close(tv, ov, rtol=0, atol=1e-6)


@pytest.mark.parametrize("engine", [TorchSearch, OrtSearch])
def test_an_empty_batch_gives_empty_results(engine, table):
    values, indices = engine(table).search(torch.zeros(0, 48), 5)
    assert values.shape == indices.shape == (0, 5) and indices.dtype == torch.int64


def test_the_ort_session_follows_torchs_thread_count(table, z):
    search, before = OrtSearch(table), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = search.search(z, 10)
        first = search._session
        assert search._threads == 1 and search.search(z, 10) is not None and search._session is first
        torch.set_num_threads(2)
        two = search.search(z, 10)
        assert search._threads == 2 and search._session is not first
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[1], two[1])
    torch.testing.assert_close(one[0], two[0], rtol=0, atol=1e-6)


def test_the_engine_is_chosen_once_per_process(monkeypatch, table):
    monkeypatch.setattr(nearest, "_ort", None)
    first = nearest.use_ort()
    assert isinstance(first, bool) and nearest._ort is first and nearest.use_ort() is first
    assert isinstance(make_search(table), OrtSearch if first else TorchSearch)
    monkeypatch.setattr(nearest, "_ort", not first)
    assert isinstance(make_search(table), TorchSearch if first else OrtSearch)


def test_without_onnx_runtime_torch_searches(monkeypatch, table, z):
    monkeypatch.setattr(nearest, "_ort", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    assert nearest.use_ort() is False
    assert isinstance(make_search(table), TorchSearch)
    with pytest.raises(ImportError):
        OrtSearch(table)


@pytest.mark.parametrize("ort", [False, True])
def test_a_deep_copy_of_a_member_that_has_searched_searches_alike(ort, monkeypatch, table, z):
    """Training deep-copies heads; a copy made after a search must not share (or fail to copy) the session."""
    monkeypatch.setattr("embedclf.heads.knn._bf16", False)
    monkeypatch.setattr(nearest, "_ort", ort)
    m = KnnMember(make_config(5, 0.05, len(table)), 48, 3)
    m.set_vectors(table.float(), torch.arange(len(table)) % 3)
    before = m.logits(z)
    twin = copy.deepcopy(m)
    if ort:
        assert twin._table._session is None and m._table._session is not None
    torch.testing.assert_close(twin.logits(z), before, rtol=0, atol=0)


def test_an_ort_session_that_fails_here_leaves_torch_searching(monkeypatch, table):
    def broken(self, threads):
        raise RuntimeError("no kernel for this CPU")

    monkeypatch.setattr(nearest, "_ort", None)
    monkeypatch.setattr(OrtSearch, "_session_for", broken)
    assert nearest.use_ort() is False
    assert isinstance(make_search(table), TorchSearch)
