"""FakeEmbedder: the model-free stand-in the core's tests rely on."""

from __future__ import annotations

import numpy as np
import pytest

from embedclf.embedders.fake import FakeEmbedder
from tests.embedders.common import cos

TEXTS = [
    "I lost my card",
    "my card was stolen yesterday",
    "how do I change my PIN",
    "what is the exchange rate for euros",
    "",
    "ünïcödé and emoji 🙂",
]


def test_shape_dtype_and_id() -> None:
    emb = FakeEmbedder(32)
    out = emb.embed_batch(TEXTS)
    assert out.shape == (len(TEXTS), 32)
    assert out.dtype == np.float32
    assert emb.model_id == "fake:32" and emb.dim == 32


def test_deterministic_across_instances() -> None:
    a = FakeEmbedder(64).embed_batch(TEXTS)
    b = FakeEmbedder(64).embed_batch(TEXTS)
    np.testing.assert_array_equal(a, b)


def test_batch_equals_single() -> None:
    emb = FakeEmbedder(64)
    batch = emb.embed_batch(TEXTS)
    single = np.stack([emb.embed_batch([t])[0] for t in TEXTS])
    np.testing.assert_array_equal(batch, single)


def test_norms_are_one_for_nonempty_text() -> None:
    out = FakeEmbedder(64).embed_batch(TEXTS)
    norms = np.linalg.norm(out, axis=1)
    for text, norm in zip(TEXTS, norms):
        if text:
            assert norm == pytest.approx(1.0, abs=1e-5)


def test_similar_texts_are_closer_than_unrelated() -> None:
    emb = FakeEmbedder(256)
    card, stolen, fx = emb.embed_batch(["I lost my card", "I lost my card abroad", "exchange rate for euros"])
    assert cos(card, stolen) > cos(card, fx)


def test_embed_batches_and_reports_progress() -> None:
    emb = FakeEmbedder(16)
    emb.batch_size = 4
    seen: list[int] = []
    out = emb.embed([f"text {i}" for i in range(10)], progress=seen.append)
    assert out.shape == (10, 16)
    assert emb.calls == [4, 4, 2]
    assert sum(seen) == 10
    np.testing.assert_array_equal(out[5], emb.embed_batch(["text 5"])[0])


def test_rejects_tiny_dim() -> None:
    with pytest.raises(ValueError):
        FakeEmbedder(1)


def test_count_tokens_grows_with_length() -> None:
    emb = FakeEmbedder(8)
    assert 0 < emb.count_tokens("one two") < emb.count_tokens("one two three four")
