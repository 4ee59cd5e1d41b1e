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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("n", "k"), [(1, 1), (20, 20), (63, 10), (64, 20), (65, 1), (333, 20), (500, 20),
                                      (2000, 10), (2000, 30), (10003, 20), (10003, 1)])
def test_top_columns_finds_the_k_largest(dtype, n, k):
    """The block search returns k distinct columns below n whose values are exactly torch.topk's (bfloat16 has
    many ties: only the values are compared there, either tied column may be picked)."""
    gen = torch.Generator().manual_seed(n + k)
    table = nearest.aligned(torch.nn.functional.normalize(torch.randn(n, 32, generator=gen), dim=-1).to(dtype))
    z = torch.nn.functional.normalize(torch.randn(37, 32, generator=gen), dim=-1).to(dtype)
    s = z @ table.T
    expected = torch.topk(s[:, :n], k, dim=1).values.float()
    idx = nearest.top_columns(s.clone(), n, k)
    assert idx.shape == (37, k) and idx.dtype == torch.int64
    assert int(idx.max()) < n and all(len(set(row)) == k for row in idx.tolist())
    got = s.gather(1, idx).float().sort(dim=1, descending=True).values
    assert torch.equal(got, expected)


def test_block_sizes_and_the_padding_columns():
    assert len(nearest.aligned(torch.zeros(10003, 4))) == 10048 and len(nearest.aligned(torch.zeros(64, 4))) == 64
    # the largest power of two b with b * b * k <= n, at least MIN_BLOCK (else one plain topk), at most ROW_ALIGN
    assert [nearest.block_size(n, 20) for n in (300, 320, 1800, 10003, 10 ** 7)] == [1, 4, 8, 16, 64]
    # the padding columns (zero rows of the table: 0 here) must never win against real columns far below 0
    n = 10003
    s = torch.zeros(5, len(nearest.aligned(torch.zeros(n, 1))))
    s[:, :n] = -1000.0 - torch.rand(5, n, generator=torch.Generator().manual_seed(3))
    idx = nearest.top_columns(s, n, 20)
    assert int(idx.max()) < n
    assert torch.equal(torch.sort(idx, dim=1).values, torch.sort(torch.topk(s[:, :n], 20, dim=1).indices, dim=1).values)
