"""Exact nearest stored vectors in float32: one product of unit rows with a fixed table, and its top k. Pure.

The kNN member (:mod:`embedclf.heads.knn`, where bfloat16 is not fast) and the out-of-scope score
(:mod:`embedclf.heads.oos`) both take the ``k`` largest cosines of a batch against thousands of stored
training vectors; the product is almost all of their cost (BANKING77: 10,003 x 384, ~3.8 M multiply-adds
a text). Two engines compute it, with the same operands and the same float32 arithmetic, so they find the
same neighbours; their cosines differ only in the order of the additions (~1e-7):

- **torch** (``z @ table.T`` then ``torch.topk``): the reference, and the fallback.
- **ONNX Runtime** (a two-node graph, ``MatMul`` + ``TopK``, the table as its initializer, built in memory):
  its own GEMM kernels (MLAS). On an AVX2 AMD EPYC VM, one thread, batches of 64 against 10,003 vectors, it
  took 104 µs a text where torch took 190 (torch's float32 product comes from Intel's MKL there).

Which one runs is decided once per process by timing both, alternately, on a table of the kind heads hold
(:func:`use_ort`, about 1 s once, most of it importing onnx); ONNX Runtime must take at most
:data:`ORT_SPEEDUP` of torch's time. Its session runs with as many intra-op threads as torch has when it
searches (the worker sets that: ``EMBEDCLF_HEAD_THREADS``), without spinning, and is rebuilt when that
number changes. Memory: about 3 MB per 1,000 stored 384-dim vectors (the table and its packed copy) plus
about 20 MB once per process, against 1.5 MB per 1,000 for torch's float32 table.

**The top k of a product** (:func:`top_columns`, torch's engine and the kNN member's bfloat16 candidates):
``torch.topk`` costs a few ns per column scanned, more than the product itself at bfloat16 speed. So the columns
are taken in ``b`` interleaved blocks (block ``j``: columns ``j, j + M, j + 2M ...``), the ``k`` blocks with the
largest maxima are found (one elementwise maximum of ``b`` contiguous slices, then ``topk`` over ``M`` block
maxima) and the ``k`` best of their ``b * k`` members are the answer. Exact: a column outside those ``k`` blocks
is beaten by the maxima of ``k`` blocks, so it is not among the ``k`` best (between equal values either may be
picked, as with ``topk``). Tables carry zero rows up to a multiple of :data:`ROW_ALIGN` so that any block size
divides them; those columns are set to ``-inf`` before the search.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

#: ONNX Runtime is used when its search takes at most this share of torch's time (both are exact; ONNX
#: Runtime's holds a second float32 copy of the table, packed for its kernels)
ORT_SPEEDUP = 0.9

_ort: bool | None = None
#: stored tables get zero rows appended up to a multiple of this (the largest block size of top_columns)
ROW_ALIGN = 64
#: smaller blocks than this give nothing over one plain ``topk``
MIN_BLOCK = 4


def block_size(n: int, k: int) -> int:
    """Columns per block for the ``k`` best of ``n`` (:func:`top_columns`): the largest power of two ``b`` up to
    :data:`ROW_ALIGN` with ``b * b * k <= n`` (both ``topk`` calls then scan few columns), or 1: one plain ``topk``.
    BANKING77's 10,003 vectors and 20 candidates: 16 (53 -> 23 us a text, product included); 1,800: 8 (10.5 -> 7.6)."""
    b = 1
    while 2 * b <= ROW_ALIGN and 4 * b * b * k <= n:
        b *= 2
    return b if b >= MIN_BLOCK else 1


def aligned(table: torch.Tensor) -> torch.Tensor:
    """A copy of ``table`` with zero rows appended up to a multiple of :data:`ROW_ALIGN` rows."""
    out = table.new_zeros((-(-len(table) // ROW_ALIGN) * ROW_ALIGN, *table.shape[1:]))
    out[: len(table)] = table
    return out


def top_columns(s: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Int64 column indices ``[rows, k]`` of the ``k`` largest values in each row of ``s[:, :n]``, in no particular
    order (``s``: a product with an :func:`aligned` table, or any ``[rows, >= n]`` tensor; its columns from ``n`` on
    are overwritten with ``-inf``). See the module doc."""
    b = block_size(n, k)
    width = s.shape[1]
    if b == 1 or width % b or len(s) == 0:
        return torch.topk(s[:, :n], k, dim=1).indices
    if width > n:
        s[:, n:] = float("-inf")
    m = width // b
    v = s.view(len(s), b, m)
    blocks = torch.topk(v.amax(dim=1), k, dim=1).indices  # [rows, k]: the k blocks with the largest maxima
    members = v.gather(2, blocks[:, None, :].expand(-1, b, -1)).flatten(1)  # [rows, b * k], block row i first
    pos = torch.topk(members, k, dim=1).indices
    return torch.div(pos, k, rounding_mode="floor") * m + blocks.gather(1, pos % k)


def best_times(fns: list[Callable[[], object]], reps: int = 5) -> list[float]:
    """Each function's best time over ``reps`` rounds in which they alternate (a slow spell hits them alike)."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def use_ort() -> bool:
    """Whether ONNX Runtime's search is markedly faster than torch's on this CPU (timed once per process,
    on one thread; False when ONNX Runtime or onnx is not installed or its session fails on this host)."""
    global _ort
    if _ort is None:
        gen = torch.Generator().manual_seed(0)
        table = torch.nn.functional.normalize(torch.randn(4096, 384, generator=gen), dim=-1)
        z = torch.nn.functional.normalize(torch.randn(64, 384, generator=gen), dim=-1)
        torch_search, threads = TorchSearch(table), torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            ort_search = OrtSearch(table)
            t_ort, t_torch = best_times([lambda: ort_search.search(z, 10), lambda: torch_search.search(z, 10)])
            _ort = t_ort <= ORT_SPEEDUP * t_torch
        except Exception:  # noqa: BLE001 - not installed (ImportError), or a session that fails here: torch searches
            _ort = False
        finally:
            torch.set_num_threads(threads)
    return _ort


class TorchSearch:
    """``table`` ([n_vectors, dim] unit rows, float16 or float32) searched with torch in float32."""

    def __init__(self, table: torch.Tensor) -> None:
        self.n = len(table)
        self.table = aligned(table.float())

    def search(self, z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 cosines ``[n, k]`` (largest first) and int64 indices of the ``k`` nearest rows to unit rows ``z``."""
        s = z @ self.table.T
        idx = top_columns(s, self.n, k)
        values, order = torch.sort(s.gather(1, idx), dim=1, descending=True)
        return values, idx.gather(1, order)


class OrtSearch:
    """``table`` searched in float32 by an ONNX Runtime session built in memory. The session holds the only
    float32 copy; ``table`` itself (e.g. a head's float16 buffer) is kept to rebuild it."""

    def __init__(self, table: torch.Tensor) -> None:
        import onnx  # noqa: F401  (fail at construction, not at the first search, when either is missing)
        import onnxruntime  # noqa: F401

        self.table = table
        self._session: Any = None
        self._threads = 0

    def __getstate__(self) -> dict:
        """A copy (``copy.deepcopy`` of a head) builds its own session when it first searches."""
        return {**self.__dict__, "_session": None, "_threads": 0}

    def _session_for(self, threads: int) -> Any:
        if self._session is None or self._threads != threads:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            model = _model_bytes(np.ascontiguousarray(self.table.float().numpy().T))
            self._session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
            self._threads = threads
        return self._session

    def search(self, z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`TorchSearch.search`."""
        if len(z) == 0:
            return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.int64)
        session = self._session_for(max(1, torch.get_num_threads()))
        values, indices = session.run(None, {"z": np.ascontiguousarray(z.numpy(), dtype=np.float32),
                                             "k": np.array([k], dtype=np.int64)})
        return torch.from_numpy(values), torch.from_numpy(indices)


def _model_bytes(table_t: np.ndarray) -> bytes:
    """An ONNX model: inputs ``z`` [n, dim] float32 and ``k`` [1] int64; outputs the top ``k`` of ``z @ table_t``
    per row, values then int64 indices, largest first."""
    from onnx import TensorProto, helper, numpy_helper

    dim = table_t.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["z", "table_t"], ["sims"]),
         helper.make_node("TopK", ["sims", "k"], ["values", "indices"], axis=1, largest=1, sorted=1)],
        "nearest",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", dim]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["n", "k"]),
         helper.make_tensor_value_info("indices", TensorProto.INT64, ["n", "k"])],
        [numpy_helper.from_array(table_t, "table_t")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def make_search(table: torch.Tensor) -> TorchSearch | OrtSearch:
    """The faster exact float32 search over ``table`` (unit rows, float16 or float32) on this CPU (:func:`use_ort`)."""
    return OrtSearch(table) if use_ort() else TorchSearch(table)
