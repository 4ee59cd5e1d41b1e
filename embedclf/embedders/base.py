"""The embedder protocol: one abstract ``embed_batch``; helpers built on it.

Pure: imports numpy only. Adapters (sentence-transformers, llama.cpp) subclass
:class:`Embedder` in their own modules, which are the only importers of their
libraries.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence, Sized
from contextlib import contextmanager
from typing import Generic, TypeVar

import numpy as np

from embedclf.errors import NonFiniteEmbedding

ProgressFn = Callable[[int], None]


class Embedder(ABC):
    """Turns texts into fixed-size float32 vectors.

    ``model_id`` names everything that changes the vectors (model file,
    pooling, normalisation, instruction prefix) and nothing that doesn't
    (threads, batch sizes, GPU offload). A head trained on one ``model_id``
    is only valid on an embedder with the same ``model_id``.
    """

    model_id: str
    dim: int
    #: texts per call to ``embed_batch`` used by :meth:`embed`
    batch_size: int = 64
    #: ``embed_batch`` calls :func:`model_starting` once its own Python is done, as its model starts
    signals_model_start: bool = False

    @abstractmethod
    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in one go; returns float32 ``[len(texts), dim]``."""

    def count_tokens(self, text: str) -> int | None:
        """Tokens the model would see for ``text``, or None if unknown."""
        return None

    def token_counter(self) -> Callable[[str], int | None]:
        """A :meth:`count_tokens` that may run on another thread while this embedder embeds.

        Workers count tokens on their consuming thread while a batch is embedded on a
        second one. Embedders whose tokenizer is not safe for that return a counter
        backed by their own copy of it.
        """
        return self.count_tokens

    def max_tokens_per_text(self) -> int | None:
        """Longest input (in tokens) the embedder keeps; longer texts are truncated."""
        return None

    def embed(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        """Embed any number of texts in batches of :attr:`batch_size`, rows in input order.

        Texts are embedded longest first, so each batch holds texts of similar length
        (less padding; measured 2x faster for MiniLM on BANKING77 than input order).
        Raises :class:`NonFiniteEmbedding` if a vector holds a NaN or an infinity: nothing may be
        trained or evaluated on it.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self.embed_batch([texts[i] for i in idx])
            bad = nonfinite_rows(out[idx])
            if bad.size:
                first = min(idx[int(b)] for b in bad)
                raise NonFiniteEmbedding(
                    f"embedder {self.model_id} returned a vector with a NaN or an infinity for {bad.size} text(s); "
                    f"the first is text {first + 1} of {len(texts)}: {texts[first][:60]!r}")
            if progress is not None:
                progress(len(idx))
        return out

    def close(self) -> None:  # noqa: B027 - optional hook: the default releases nothing
        """Release the model (optional)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r}, dim={self.dim})"


_starting = threading.local()


@contextmanager
def when_model_starts(callback: Callable[[], None]) -> Iterator[None]:
    """Run ``callback`` (once) when an ``embed_batch`` called by this thread inside the block starts its model.

    A worker hands its other threads their work (the previous batch's heads, the next messages) then: while
    the model's kernels run without the GIL, not while the embedder's own Python builds the model's inputs,
    which the GIL-holding threads would slow down. Only for embedders with :attr:`Embedder.signals_model_start`.
    """
    _starting.callback = callback
    try:
        yield
    finally:
        _starting.callback = None


def model_starting() -> None:
    """Called by ``embed_batch`` just before its model runs: the callback of :func:`when_model_starts`, if any."""
    callback = getattr(_starting, "callback", None)
    if callback is not None:
        _starting.callback = None
        callback()


def nonfinite_rows(vectors: np.ndarray) -> np.ndarray:
    """Indices of the rows of a 2-D ``vectors`` that hold a NaN or an infinity (none: an empty array)."""
    finite = np.isfinite(vectors)
    if finite.all():
        return np.empty(0, dtype=np.intp)
    return np.flatnonzero(~finite.all(axis=1))


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = x / np.maximum(norms, eps)
    return out


#: a text's token ids as an embedder keeps them (a list, or the 1-d integer array its model takes)
Ids = TypeVar("Ids", bound=Sized)


class TokenMemo(Generic[Ids]):
    """Token ids a worker's receive thread computed while counting, kept for the batch thread's ``embed_batch``.

    A worker counts every text's tokens when it receives it (to cap a batch's tokens); an embedder that
    keeps those ids here does not tokenize the text again on the batch thread, so tokenising overlaps
    the embedding of the previous batch. Bounded (oldest first out) by texts and by tokens: a text
    counted and never embedded only costs room until newer ones push it out; a miss just tokenizes.
    Thread-safe; ids are stored as given (callers pass lists or arrays they do not modify).
    """

    def __init__(self, max_texts: int = 4096, max_tokens: int = 1 << 18) -> None:
        self.max_texts, self.max_tokens = max_texts, max_tokens
        self._ids: OrderedDict[str, Ids] = OrderedDict()
        self._tokens = 0
        self._lock = threading.Lock()
        #: texts served from the memo / tokenized again by ``take``'s caller
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._ids)

    def put(self, text: str, ids: Ids) -> Ids:
        """Remember ``ids`` for ``text`` (replacing an older entry); returns ``ids``."""
        with self._lock:
            old = self._ids.pop(text, None)
            if old is not None:
                self._tokens -= len(old)
            self._ids[text] = ids
            self._tokens += len(ids)
            while self._ids and (len(self._ids) > self.max_texts or self._tokens > self.max_tokens):
                _, dropped = self._ids.popitem(last=False)
                self._tokens -= len(dropped)
        return ids

    def take(self, text: str) -> Ids | None:
        """The ids remembered for ``text``, forgotten here (a text is embedded once); None if absent."""
        with self._lock:
            ids = self._ids.pop(text, None)
            if ids is None:
                self.misses += 1
            else:
                self._tokens -= len(ids)
                self.hits += 1
        return ids
