"""A text's token ids from its words' ids, each word tokenized once: BERT-style tokenizers. Pure.

Tokenizing a short text with Hugging Face's ``tokenizers`` costs 39–51 µs of CPU here (one
``encode``; ``encode_batch`` 49–53 µs a text over its thread pool), almost all of it around the Rust
core: building the ``Encoding`` and its lists. A worker tokenizes every text it receives on its one
receive thread (86 % of that thread's time, docs/benchmarks.md), and ``embed_batch`` every text the
worker did not count first: the same ids, recomputed for the same few thousand words.

A BERT tokenizer (``BertNormalizer``, ``BertPreTokenizer``, ``WordPiece``) never lets a token
cross whitespace, and for a text of **printable ASCII** a space is its only whitespace and the
normaliser maps each character on its own (lowercasing; accents, Chinese characters and control
characters do not occur). So the ids of such a text are the special tokens' frame (``[CLS]`` …
``[SEP]``) around each space-separated word's ids in turn, cut where the tokenizer's truncation
cuts. :class:`ChunkIds` keeps each word's ids in a dict (:class:`Chunks`, bounded: it starts over
when full) and answers a text whose words are all known from it, in a few microseconds. Up to
:data:`NEW_WORDS` words it does not know yet are tokenized alone (and kept). A text with more new
words, or with anything but printable ASCII (an accent, an emoji, a tab), is tokenized by the
tokenizer itself, whose answer is returned as it is and teaches the dict the words it holds whole
(from the tokens' character offsets). The dict only ever holds what the tokenizer itself gave, so
both paths give the same ids.

Anything else (another normaliser, pre-tokenizer or model, padding, truncation from the left or
with a stride, an added token with whitespace in it or that strips it) turns the cache off at
construction: every text then goes to the tokenizer, as before. A self-check on probe texts does
the same if the two paths disagree on any of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: words kept at most (then the dict starts over): ~150 bytes each
CHUNKS_MAX = 100_000
#: a text with at most this many words not known yet has those tokenized alone (~8.5 µs a word here); with more,
#: the whole text goes to the tokenizer (~40 µs for 15 words) and its words are learned from the result
NEW_WORDS = 2
#: texts both paths must tokenize alike for the cache to be used (punctuation, digits, case, specials, [UNK])
PROBES = (
    "Hello, World! it's 3.14 -- ok?", "a  b   c", " padded text ", "x" * 120 + " tail",
    "[MASK] [CLS]x y[SEP] (parens) {braces} <angle> #hash @at $5 100% a&b c*d e+f g=h i|j k~l `m` \"n\" 'o'",
    "unbelievably antidisestablishmentarianism zzzqqqxxx", "",
)


class Chunks:
    """Word -> its token ids (no special tokens), shared by the :class:`ChunkIds` of one model (one per
    thread: a ``tokenizers.Tokenizer`` must not be used by two threads at once). Dict reads and writes are
    atomic under the GIL; when more than ``limit`` words are held, the next word added starts it over."""

    def __init__(self, limit: int = CHUNKS_MAX) -> None:
        self.limit = limit
        self.ids: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, word: str, ids: list[int]) -> None:
        if len(self.ids) >= self.limit:
            self.ids = {}
        self.ids[word] = ids


def _usable(tok: Any) -> tuple[bool, int | None]:
    """Whether ``tok``'s pipeline keeps tokens inside space-separated words of printable ASCII, and its
    truncation length (None: none)."""
    from tokenizers import models, normalizers, pre_tokenizers

    if not (isinstance(tok.normalizer, normalizers.BertNormalizer)
            and isinstance(tok.pre_tokenizer, pre_tokenizers.BertPreTokenizer)
            and isinstance(tok.model, models.WordPiece) and tok.padding is None):
        return False, None
    for added in tok.get_added_tokens_decoder().values():
        if added.lstrip or added.rstrip or any(c.isspace() for c in added.content):
            return False, None
    trunc = tok.truncation
    if trunc is None:
        return True, None
    if trunc.get("direction", "right") != "right" or trunc.get("stride", 0):
        return False, None
    return True, int(trunc["max_length"])


class ChunkIds:
    """Token ids of texts, special tokens and truncation included, exactly as ``tok.encode(text).ids``;
    see the module doc. ``tok`` is used by this object's thread only; ``chunks`` may be shared."""

    def __init__(self, tok: Any, chunks: Chunks | None = None) -> None:
        self.tok = tok
        self.chunks = chunks if chunks is not None else Chunks()
        self.enabled, self.max_length = _usable(tok)
        #: texts answered from the cache / tokenized by ``tok``
        self.hits = self.misses = 0
        if self.enabled:
            probe = tok.encode("a")
            body = [i for i, special in enumerate(probe.special_tokens_mask) if not special]
            if len(body) != 1:
                self.enabled = False
            else:
                self.prefix = probe.ids[: body[0]]
                self.suffix = probe.ids[body[0] + 1:]
                self.enabled = self._self_check()

    def _self_check(self) -> bool:
        """Both paths agree on :data:`PROBES` and, with truncation, on a text it cuts (each tokenized once to learn
        its words, then from the cache), in a dict of its own: a dict other threads share is left alone."""
        shared, self.chunks = self.chunks, Chunks(self.chunks.limit)
        cut = () if self.max_length is None else (" ".join(["ab", "cd,"] * self.max_length),)
        try:
            for text in PROBES + cut:
                want = self.tok.encode(text).ids
                if self.ids(text) != want or self.ids(text) != want:
                    return False
            return True
        finally:
            self.chunks = shared
            self.hits = self.misses = 0

    def cached(self, text: str) -> list[int] | None:
        """The ids of ``text`` from its words' ids, or None: not printable ASCII, or more than :data:`NEW_WORDS`
        of its words not known yet (up to that many are tokenized alone, and kept)."""
        if not self.enabled or not (text.isascii() and text.isprintable()):
            return None
        words = text.split()  # (in printable ASCII a space is the only whitespace)
        got = list(map(self.chunks.ids.get, words))
        if None in got:
            new = [i for i, ids in enumerate(got) if ids is None]
            if len(new) > NEW_WORDS:
                return None
            for i in new:
                ids = self.tok.encode(words[i], add_special_tokens=False).ids
                if self.max_length is not None and len(ids) >= self.max_length:
                    return None  # perhaps cut: the whole text goes to the tokenizer
                if ids:
                    self.chunks.add(words[i], ids)
                got[i] = ids
        body = [i for ids in got for i in ids]  # type: ignore[union-attr]  # no None is left
        if self.max_length is not None:
            room = self.max_length - len(self.prefix) - len(self.suffix)
            if len(body) > room:
                del body[max(room, 0):]
        self.hits += 1
        return self.prefix + body + self.suffix

    def learn(self, text: str, encoding: Any) -> None:
        """Keep the ids of each word of ``text`` not known yet whose tokens ``encoding`` (``tok``'s for that text)
        holds whole."""
        if not self.enabled or not (text.isascii() and text.isprintable()):
            return
        ids, offsets = encoding.ids, encoding.offsets
        # the tokens between the frame's, in order: an added token written in the text ("[MASK]") is its word's
        j, end = len(self.prefix), len(ids) - len(self.suffix)
        cut = self.max_length is not None and len(ids) >= self.max_length
        known, add = self.chunks.ids, self.chunks.add
        at = 0
        for word in text.split(" "):
            stop, first = at + len(word), j
            while j < end and offsets[j][0] < stop:
                j += 1
            if cut and j == end:
                break  # this word holds the last token kept: it may have been cut, and the ones after it have none
            if j > first and word not in known:
                add(word, ids[first:j])
            at = stop + 1

    def ids(self, text: str) -> list[int]:
        """As ``tok.encode(text).ids``."""
        got = self.cached(text)
        if got is not None:
            return got
        self.misses += 1
        enc = self.tok.encode(text)
        self.learn(text, enc)
        return enc.ids

    def ids_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """As ``[e.ids for e in tok.encode_batch(texts)]``; texts not answered from the cache go to ``encode_batch``
        together."""
        out = [self.cached(t) for t in texts]
        todo = [i for i, got in enumerate(out) if got is None]
        if todo:
            self.misses += len(todo)
            for i, enc in zip(todo, self.tok.encode_batch([texts[i] for i in todo])):
                self.learn(texts[i], enc)
                out[i] = enc.ids
        return out  # type: ignore[return-value]  # every None was filled
