"""llama.cpp adapter (llama-cpp-python); the only module that imports ``llama_cpp``.

Why not ``Llama.embed()``: it tokenizes without special tokens beyond BOS and
truncates to ``n_batch`` tokens, so it cannot append the EOS token that
last-token-pooling embedding models (Qwen3-Embedding: ``<|endoftext|>``) are
trained to read, and typing the EOS string into the text does not help (it is
tokenized as plain text). This module therefore runs the same loop itself over
token lists: tokenize (BOS as the GGUF asks), apply the instruction template,
keep the *first* tokens, append EOS after truncation, pack many sequences into
one ``llama_decode`` (each with its own ``seq_id``, positions from 0, every
token marked as an output), read one pooled vector per sequence with
``llama_get_embeddings_seq``, and clear the KV memory before the next decode.
Token counting and EOS handling share that one tokenizer path.

llama.cpp facts this relies on (llama-cpp-python 0.3.36):

* A plain decoder GGUF has no pooling metadata: the pooling type must be passed.
* A pooled sequence must fit in one micro-batch, so ``n_ubatch`` defaults to
  ``n_batch`` and a text keeps at most ``min(n_ctx, n_batch, n_ubatch)`` tokens.
* With ``embedding=True`` llama-cpp-python sets ``kv_unified`` and
  ``n_seq_max = min(n_batch, llama_max_parallel_sequences())``; a decode may
  carry at most that many sequences and ``n_batch`` tokens.
* The LM head is still computed for every token in embedding mode, which
  dominates small models with big vocabularies (Gemma-3: 262k).
* A context is not thread-safe: use one embedder per thread/process.
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedclf.embedders.base import Embedder, TokenMemo, l2_normalize
from embedclf.embedders.download import ModelNotFoundError, resolve_gguf
from embedclf.embedders.options import check_options, parse_bool, parse_int
from embedclf.embedders.spec import EmbedderSpec, SpecError

#: llama.cpp ``enum llama_pooling_type`` values (kept here so importing this module
#: does not need llama-cpp-python)
POOLING_TYPES: dict[str, int] = {"mean": 1, "cls": 2, "last": 3}

LLAMA_OPTIONS = (
    "add_eos", "batch_size", "dim", "instruction", "n_batch", "n_ctx", "n_gpu_layers",
    "n_threads", "n_ubatch", "normalize", "pack", "pooling", "verbose",
)
_INT_OPTIONS = ("batch_size", "dim", "n_batch", "n_ctx", "n_gpu_layers", "n_threads", "n_ubatch")
_BOOL_OPTIONS = ("add_eos", "normalize", "pack", "verbose")


def apply_instruction(instruction: str | None, text: str) -> str:
    """``instruction.format(text=text)`` if it has ``{text}``, else ``instruction + text``.

    Only the ``{text}`` field is substituted (``str.replace``), so other braces in
    an instruction are kept literally.
    """
    if not instruction:
        return text
    if "{text}" in instruction:
        return instruction.replace("{text}", text)
    return instruction + text


def make_model_id(
    file_name: str,
    pooling: str,
    *,
    add_eos: bool = False,
    normalize: bool = True,
    dim: int | None = None,
    instruction: str | None = None,
) -> str:
    """``llama:<file>:<pooling>[:eos][:norm][:dim=N][:inst=<first 8 hex of sha256>]``.

    Only what changes the vectors goes in; batch sizes, threads and GPU offload don't.
    """
    parts = ["llama", file_name, pooling]
    if add_eos:
        parts.append("eos")
    if normalize:
        parts.append("norm")
    if dim is not None:
        parts.append(f"dim={dim}")
    if instruction:
        parts.append("inst=" + hashlib.sha256(instruction.encode("utf-8")).hexdigest()[:8])
    return ":".join(parts)


class LlamaCppEmbedder(Embedder):
    """Pooled embeddings of a GGUF model through llama.cpp.

    ``model_id`` = ``llama:<file>:<pooling>[:eos][:norm][:dim=N][:inst=<sha8>]``;
    ``n_ctx``/``n_batch``/threads/GPU offload do not change it (only the
    truncation length depends on them).
    """

    def __init__(
        self,
        model_path: str | Path,
        pooling: str = "mean",
        normalize: bool = True,
        add_eos: bool = False,
        instruction: str | None = None,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_ubatch: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        dim: int | None = None,
        verbose: bool = False,
        batch_size: int = 64,
        pack: bool = True,
    ) -> None:
        if pooling not in POOLING_TYPES:
            raise SpecError(f"pooling must be one of {', '.join(POOLING_TYPES)}, got {pooling!r}")
        for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("batch_size", batch_size)):
            if value < 1:
                raise SpecError(f"{name} must be >= 1, got {value}")
        if n_ubatch is not None and n_ubatch < min(n_batch, n_ctx):
            # a pooled text must fit one micro-batch; llama.cpp aborts the process otherwise
            raise SpecError(f"n_ubatch ({n_ubatch}) must be >= n_batch ({n_batch}) for pooled embeddings")
        if dim is not None and dim < 1:
            raise SpecError(f"dim must be >= 1, got {dim}")
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF model file {path} does not exist")
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "llama-cpp-python is not installed: pip install 'embedclf[llama]' (see README for CMAKE_ARGS)"
            ) from exc
        self._lib: Any = llama_cpp
        self.path = path
        self.pooling = pooling
        self.normalize = normalize
        self.add_eos = add_eos
        self.instruction = instruction or None
        self.batch_size = batch_size
        #: pack many texts into one decode (fast). llama.cpp picks matmul kernels by batch
        #: shape, so a packed text's vector can differ from its one-by-one vector in the last
        #: digits (cosine >= 0.999 measured; upstream llama.cpp#3014). pack=False decodes each
        #: text alone: bit-identical whatever else is in the batch, ~30 % slower on CPU.
        self.pack = pack
        self._llm: Any = llama_cpp.Llama(
            model_path=str(path),
            embedding=True,
            pooling_type=POOLING_TYPES[pooling],
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_ubatch or n_batch,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_gpu_layers=n_gpu_layers,
            verbose=verbose,
        )
        params = self._llm.context_params
        #: tokens per decode (llama-cpp-python caps n_batch at n_ctx)
        self._n_batch = int(params.n_batch)
        self._n_seq_max = max(1, int(params.n_seq_max))
        self._max_tokens = min(int(n_ctx), int(params.n_batch), int(params.n_ubatch))
        self._eos = int(self._llm.token_eos())
        self._bos = int(self._llm.token_bos())
        # a GGUF with tokenizer.ggml.add_eos_token=true gets EOS from the tokenizer itself
        self._gguf_adds_eos = bool(llama_cpp.llama_vocab_get_add_eos(llama_cpp.llama_model_get_vocab(self._llm.model)))
        if add_eos and self._eos < 0:
            raise SpecError(f"{path.name} defines no EOS token, add_eos is impossible")
        self._n_embd = int(self._llm.n_embd())
        if dim is not None and dim > self._n_embd:
            raise SpecError(f"dim={dim} exceeds the model's embedding size {self._n_embd}")
        self.dim = dim or self._n_embd
        self._truncate_dim = dim if dim is not None and dim < self._n_embd else None
        #: ids counted by a token_counter() on another thread, taken by embed_batch
        self._memo: TokenMemo[list[int]] = TokenMemo()
        # token/seq-id buffers for one decode; one seq id per token
        self._batch: Any = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        self.model_id = make_model_id(
            path.name, pooling, add_eos=add_eos, normalize=normalize, dim=self._truncate_dim,
            instruction=self.instruction,
        )

    @classmethod
    def from_spec(cls, spec: EmbedderSpec, model_dir: str | Path | None = None) -> LlamaCppEmbedder:
        """Resolve the target to a local GGUF (see :mod:`.download`) and convert the string options."""
        opts = dict(spec.options)
        check_options(opts, LLAMA_OPTIONS, "llama")
        kwargs: dict[str, Any] = {}
        for key, value in opts.items():
            if key in _INT_OPTIONS:
                kwargs[key] = parse_int(key, value)
            elif key in _BOOL_OPTIONS:
                kwargs[key] = parse_bool(key, value)
            elif key == "pooling":
                if value not in POOLING_TYPES:
                    raise SpecError(f"option pooling={value!r}: use one of {', '.join(POOLING_TYPES)}")
                kwargs[key] = value
            else:  # instruction
                kwargs[key] = value
        try:
            path = resolve_gguf(spec.target, model_dir)
        except ValueError as exc:
            raise SpecError(str(exc)) from exc
        return cls(path, **kwargs)

    @property
    def llm(self) -> Any:
        if self._llm is None:
            raise RuntimeError("embedder is closed")
        return self._llm

    def tokens(self, text: str) -> list[int]:
        """The token ids fed to the model for ``text``: BOS (if the GGUF adds one),
        instruction + text truncated to the first tokens, then EOS if asked for."""
        full = apply_instruction(self.instruction, text)
        # add_bos=True means "add the special tokens the GGUF asks for" (llama_tokenize add_special)
        toks = list(self.llm.tokenize(full.encode("utf-8", "replace"), add_bos=True, special=False))
        want_eos = self.add_eos
        if self._gguf_adds_eos and toks and toks[-1] == self._eos:
            toks.pop()  # re-appended after truncation, so a long text still ends with it
            want_eos = True
        toks = toks[: self._max_tokens - (1 if want_eos else 0)]
        if want_eos:
            toks.append(self._eos)
        if not toks:  # empty text on a model without BOS: embed a lone EOS/BOS rather than fail
            toks = [self._bos if self._bos >= 0 else self._eos]
        return toks

    def count_tokens(self, text: str) -> int:
        return len(self.tokens(text))

    def max_tokens_per_text(self) -> int:
        return self._max_tokens

    def token_counter(self) -> Callable[[str], int]:
        """Counts on another thread (llama.cpp's tokenizer only reads the vocabulary) and keeps the ids for
        :meth:`embed_batch`: a worker's texts are tokenized once, on its receive thread."""
        memo = self._memo
        return lambda text: len(memo.put(text, self.tokens(text)))

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        take = self._memo.take
        return self.embed_token_lists([take(t) or self.tokens(t) for t in texts])

    def embed_token_lists(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        """Embed pre-tokenized sequences (each at most :meth:`max_tokens_per_text` long)."""
        out = np.empty((len(seqs), self._n_embd), dtype=np.float32)
        pending: list[int] = []
        n_tokens = 0
        for i, toks in enumerate(seqs):
            if not 0 < len(toks) <= self._max_tokens:
                raise ValueError(f"sequence {i} has {len(toks)} tokens (allowed 1..{self._max_tokens})")
            if pending and (
                not self.pack or n_tokens + len(toks) > self._n_batch or len(pending) >= self._n_seq_max
            ):
                self._decode([seqs[j] for j in pending], out[pending[0] : pending[-1] + 1])
                pending, n_tokens = [], 0
            pending.append(i)
            n_tokens += len(toks)
        if pending:
            self._decode([seqs[j] for j in pending], out[pending[0] : pending[-1] + 1])
        if self._truncate_dim is not None:
            out = out[:, : self._truncate_dim]
        if self.normalize:
            out = l2_normalize(out)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _decode(self, seqs: Sequence[Sequence[int]], out: np.ndarray) -> None:
        """One ``llama_decode`` of packed sequences; pooled vectors into ``out`` rows."""
        lib, llm, batch = self._lib, self.llm, self._batch
        memory = lib.llama_get_memory(llm.ctx)
        if memory:  # encoder-only models have no KV memory
            lib.llama_memory_clear(memory, True)
        j = 0
        for seq_id, toks in enumerate(seqs):
            for pos, tok in enumerate(toks):
                batch.token[j] = tok
                batch.pos[j] = pos  # positions restart at 0: sequences are independent
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = seq_id
                batch.logits[j] = 1  # every token is an output in embedding mode
                j += 1
        batch.n_tokens = j
        rc = lib.llama_decode(llm.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} for {len(seqs)} sequences / {j} tokens")
        for seq_id in range(len(seqs)):
            ptr = lib.llama_get_embeddings_seq(llm.ctx, seq_id)
            if not ptr:
                raise RuntimeError(f"llama.cpp returned no pooled embedding for sequence {seq_id}")
            out[seq_id] = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self._n_embd,))

    def close(self) -> None:
        """Free the batch buffers and the model; the embedder is unusable afterwards."""
        batch, self._batch = getattr(self, "_batch", None), None
        if batch is not None:
            self._lib.llama_batch_free(batch)
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
