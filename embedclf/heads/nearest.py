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
        self.table = table.float()

    def search(self, z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 cosines ``[n, k]`` (largest first) and int64 indices of the ``k`` nearest rows to unit rows ``z``."""
        top = torch.topk(z @ self.table.T, k, dim=1)
        return top.values, top.indices


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
