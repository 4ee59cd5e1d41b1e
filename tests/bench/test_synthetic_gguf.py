"""Synthetic Qwen3 GGUF: the 8B shape arithmetic (no file), and the ``tiny`` preset written to disk,
read back with gguf's reader and loaded by the real llama.cpp through embedclf's llama embedder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from embedclf.bench import synthetic_gguf as sg
from embedclf.cli import cli
from tests.conftest import one_line_error

gguf = pytest.importorskip("gguf")

TEXTS = ["my card payment was declined", "where is my parcel?", "Überweisung ✓ 42", "hello world"]
TINY_SEED = 7


def make_gguf(*args: str, ok: bool = True):
    result = CliRunner().invoke(cli, ["bench", "make-gguf", *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth")


@pytest.fixture(scope="module")
def tiny_f16(tiny_dir: Path) -> Path:
    path = tiny_dir / "tiny-f16.gguf"
    sg.write_gguf(path, sg.make_shape("tiny"), "f16", seed=TINY_SEED)
    return path


def embed(path: Path, options: str = "pooling=last") -> np.ndarray:
    from embedclf.embedders.spec import load_embedder

    emb = load_embedder(f"llama:{path}?{options}")
    try:
        return emb.embed_batch(TEXTS)
    finally:
        emb.close()


# ---------------------------------------------------------------- Qwen3-8B shape arithmetic (no file)


def test_qwen3_8b_parameter_count_matches_the_published_figures():
    shape = sg.make_shape("qwen3-8b")
    # Qwen/Qwen3-8B config.json: 36 layers, hidden 4096, ffn 12288, 32 q heads, 8 kv heads of 128, vocab 151936
    L, h, f, nq, nkv, d, v = 36, 4096, 12288, 32, 8, 128, 151936
    per_layer = h * nq * d + 2 * h * nkv * d + nq * d * h + 3 * h * f + 2 * h + 2 * d
    expected = 2 * v * h + L * per_layer + h  # token_embd + untied output + blocks + output_norm
    assert shape.n_params() == expected
    assert shape.n_params_non_embedding() == expected - 2 * v * h
    print(f"Qwen3-8B synthetic: {shape.n_params():,} parameters, {shape.n_params_non_embedding():,} non-embedding")
    # model card: "Number of Parameters: 8.2B", "Number of Parameters (Non-Embedding): 6.95B"
    assert round(shape.n_params() / 1e9, 1) == sg.PUBLISHED_PARAMS / 1e9
    assert round(shape.n_params_non_embedding() / 1e9, 2) == sg.PUBLISHED_NON_EMBEDDING_PARAMS / 1e9
    assert len(shape.tensors()) == 3 + 11 * L
    # F16: 2 bytes per matrix weight, 4 per norm weight; Q8_0: 34 bytes per block of 32
    n_norm = sum(t.n_params for t in shape.tensors() if t.kind == "norm")
    assert n_norm == L * (2 * h + 2 * d) + h
    assert sg.estimate_bytes(shape, "f16") == 2 * (expected - n_norm) + 4 * n_norm
    assert sg.estimate_bytes(shape, "q8_0") == (expected - n_norm) // 32 * 34 + 4 * n_norm


def test_tensor_names_are_the_qwen3_tensors_of_gguf_constants():
    shape = sg.make_shape("qwen3-8b")
    names = {t.name for t in shape.tensors()}
    expected = set()
    for kind in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.QWEN3]:
        if kind == gguf.MODEL_TENSOR.ROPE_FREQS:  # optional, llama.cpp computes RoPE from rope.freq_base
            continue
        template = gguf.TENSOR_NAMES[kind]
        layers = range(shape.layers) if "{bid}" in template else [None]
        expected |= {template.format(bid=i) + ".weight" for i in layers}
    assert names == expected
    by_name = {t.name: t.shape for t in shape.tensors()}
    assert by_name["blk.0.attn_q_norm.weight"] == (128,) and by_name["blk.35.attn_k_norm.weight"] == (128,)
    assert by_name["blk.0.attn_k.weight"] == (8 * 128, 4096) and by_name["blk.0.ffn_down.weight"] == (4096, 12288)
    assert by_name["output.weight"] == by_name["token_embd.weight"] == (151936, 4096)


def test_weights_are_streamed_in_bounded_chunks():
    embd = sg.make_shape("qwen3-8b").tensors()[0]
    blocks = sg._chunks(embd, "f16", np.random.default_rng(0))
    first, second = next(blocks), next(blocks)
    assert first.dtype == np.float16 and first.shape[1] == 4096 and first.size <= sg._CHUNK_VALUES
    assert second.shape == first.shape and first.nbytes <= 16 * 2**20  # not the 1.2 GB tensor at once


def test_dry_run_prints_the_count_and_writes_nothing(tmp_path):
    out = tmp_path / "qwen3-8b-synth.gguf"
    r = make_gguf("--out", str(out), "--dry-run")
    assert f"{sg.make_shape('qwen3-8b').n_params():,}" in r.output and "8.19 B" in r.output
    assert "6.95 B without embeddings" in r.output and "399 tensors" in r.output
    assert not out.exists()


# ---------------------------------------------------------------- the tiny preset on disk


def test_tiny_file_reads_back_with_the_declared_shapes(tiny_f16):
    shape = sg.make_shape("tiny")
    r = gguf.GGUFReader(tiny_f16)
    field = lambda key: r.fields[key].contents()  # noqa: E731
    assert field("general.architecture") == "qwen3"
    assert field("qwen3.block_count") == shape.layers and field("qwen3.embedding_length") == shape.hidden
    assert field("qwen3.attention.head_count_kv") == shape.kv_heads and field("qwen3.attention.key_length") == 64
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "qwen2"
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == shape.vocab == len(set(tokens))
    assert tokens[field("tokenizer.ggml.eos_token_id")] == "<|im_end|>"
    specs = {t.name: t for t in shape.tensors()}
    assert [t.name for t in r.tensors] == list(specs)
    for t in r.tensors:
        spec = specs[t.name]
        assert tuple(int(x) for x in reversed(t.shape)) == spec.shape
        assert t.tensor_type.name == ("F32" if spec.kind == "norm" else "F16")
    assert sum(int(t.n_elements) for t in r.tensors) == shape.n_params()
    q = np.asarray(next(t for t in r.tensors if t.name == "blk.0.ffn_up.weight").data, dtype=np.float32)
    assert abs(q.std() - 0.02) < 0.001 and abs(q.mean()) < 0.001  # Qwen3's initializer_range
    norm = np.asarray(next(t for t in r.tensors if t.name == "output_norm.weight").data)
    assert np.all(np.abs(norm - 1) <= 0.05)


@pytest.mark.slow
def test_tiny_loads_in_llama_cpp_and_embeds(tiny_f16):
    from embedclf.embedders.spec import load_embedder

    emb = load_embedder(f"llama:{tiny_f16}?pooling=last")
    try:
        assert emb.dim == 256 and emb.model_id == f"llama:{tiny_f16.name}:last:norm"
        vecs = emb.embed_batch(TEXTS)
        # the synthetic byte-level BPE is lossless: llama.cpp's tokenizer round-trips any UTF-8 text
        for text in TEXTS:
            toks = emb.tokens(text)
            assert 0 < len(toks) <= len(text.encode()) and max(toks) < 2048
            assert emb.llm.detokenize(toks).decode() == text
        assert emb.count_tokens("abcd") == 2  # letter pairs are merged
    finally:
        emb.close()
    assert vecs.shape == (len(TEXTS), 256) and vecs.dtype == np.float32 and np.isfinite(vecs).all()
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert len({v.tobytes() for v in vecs}) == len(TEXTS)
    mean = embed(tiny_f16, "pooling=mean&pack=0")
    assert mean.shape == vecs.shape and np.isfinite(mean).all() and not np.allclose(mean, vecs)


@pytest.mark.slow
def test_same_seed_same_file_and_vectors_other_seed_differs(tiny_f16, tiny_dir):
    again, other = tiny_dir / "again.gguf", tiny_dir / "other.gguf"
    r = make_gguf("--out", str(again), "--preset", "tiny", "--seed", str(TINY_SEED))
    assert f"wrote {again}" in r.output and f"{again.stat().st_size:,} bytes" in r.output
    make_gguf("--out", str(other), "--preset", "tiny", "--seed", str(TINY_SEED + 1))
    assert sha256(again) == sha256(tiny_f16) != sha256(other)
    a, b, c = embed(tiny_f16, "pack=0&pooling=last"), embed(again, "pack=0&pooling=last"), embed(other,
                                                                                                 "pack=0&pooling=last")
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


@pytest.mark.slow
def test_q8_0_tiny_is_quantized_and_close_to_f16(tiny_f16, tiny_dir):
    q8 = tiny_dir / "tiny-q8_0.gguf"
    make_gguf("--out", str(q8), "--preset", "tiny", "--dtype", "q8_0", "--seed", str(TINY_SEED))
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(q8).tensors}
    assert types["token_embd.weight"] == types["blk.1.ffn_down.weight"] == "Q8_0"
    assert types["blk.1.attn_q_norm.weight"] == "F32"
    assert q8.stat().st_size < 0.6 * tiny_f16.stat().st_size  # 8.5 vs 16 bits per weight
    a, b = embed(tiny_f16, "pack=0&pooling=last"), embed(q8, "pack=0&pooling=last")
    assert np.isfinite(b).all()
    cos = np.sum(a * b, axis=1)  # unit vectors
    assert cos.min() > 0.999, cos  # measured >= 0.9998


@pytest.mark.slow
def test_full_qwen3_vocabulary_with_qwen_special_ids_loads(tmp_path):
    """The 8B preset's 151,936-token vocabulary (specials at Qwen's ids) on small dims: ~160 MB."""
    from embedclf.embedders.spec import load_embedder

    path = tmp_path / "full-vocab.gguf"
    make_gguf("--out", str(path), "--layers", "1", "--hidden", "256", "--ffn", "768", "--heads", "4",
              "--kv-heads", "2", "--head-dim", "64")
    try:
        emb = load_embedder(f"llama:{path}?pooling=last&add_eos=1")
        try:
            assert emb.llm.n_vocab() == 151936
            assert (emb._bos, emb._eos) == (151643, 151645)  # <|endoftext|>, <|im_end|> as in Qwen3-8B
            assert emb.tokens("hello")[-1] == 151645
            vecs = emb.embed_batch(TEXTS)
        finally:
            emb.close()
        assert vecs.shape == (len(TEXTS), 256) and np.isfinite(vecs).all()
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--preset", "tiny", "--dtype", "q8_0", "--hidden", "100"], ["hidden = 100", "multiple of 32"]),
        (["--preset", "tiny", "--heads", "5"], ["heads (5)", "kv-heads (2)"]),
        (["--preset", "tiny", "--vocab", "100"], ["vocab 100 too small"]),
        (["--preset", "tiny", "--head-dim", "33"], ["head-dim must be even"]),
    ],
)
def test_bad_shapes_give_one_line_errors(tmp_path, args, fragments):
    out = tmp_path / "bad.gguf"
    one_line_error(make_gguf("--out", str(out), *args, ok=False), *fragments)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bad_targets_give_one_line_errors(tmp_path):
    existing = tmp_path / "there.gguf"
    existing.write_bytes(b"keep me")
    one_line_error(make_gguf("--out", str(existing), "--preset", "tiny", ok=False), "exists", "--force")
    assert existing.read_bytes() == b"keep me"
    missing = tmp_path / "no" / "such" / "dir.gguf"
    one_line_error(make_gguf("--out", str(missing), "--preset", "tiny", ok=False), "does not exist")
    huge = tmp_path / "huge.gguf"  # a 2e9-token vocabulary: 33 PB of embeddings, checked before anything is written
    one_line_error(make_gguf("--out", str(huge), "--vocab", "2000000000", ok=False), "not enough disk space")
    assert not huge.exists()
