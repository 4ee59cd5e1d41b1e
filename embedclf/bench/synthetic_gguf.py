"""A GGUF with Qwen3-8B's architecture and shapes and random weights, for GPU throughput runs.

Measuring llama.cpp speed on the 8B shape needs no real weights: the compute per token depends on
the shapes and the tensor types only. :func:`write_gguf` writes such a file with the ``gguf``
package (``pip install gguf``, in the ``llama`` extra), streaming the weights tensor by tensor in
chunks of rows, so memory stays at tens of MB whatever the model size.

Shapes (checked against Qwen/Qwen3-8B ``config.json`` and llama.cpp's ``LLM_ARCH_QWEN3`` loader in
``src/llama-model.cpp``): arch ``qwen3``, 36 blocks, hidden 4096, FFN 12288 (SwiGLU: gate, up,
down), 32 query heads and 8 KV heads of dim 128, per-head RMS norms ``attn_q_norm`` /
``attn_k_norm`` of size 128, vocab 151,936, RoPE theta 1e6, RMS eps 1e-6, context 40,960, and an
untied ``output.weight`` (``tie_word_embeddings: false``; llama.cpp would fall back to
``token_embd`` if it were missing). That is 8,190,735,360 parameters, the published "8.2B"
(6.95 B without the two embedding matrices).

Weights are uniform random with the std of Qwen's ``initializer_range`` (0.02); norm weights are
1 +- a little. Matrices are F16 or Q8_0 (quantized here with ``gguf.quants``, bit-exact with
ggml's reference Q8_0), 1-D norms F32, as llama.cpp's own converter does.

The tokenizer block is synthetic but valid for llama.cpp: a GPT-2 style byte-level BPE
(``tokenizer.ggml.model = gpt2``, pre-tokenizer ``qwen2``): the 256 byte tokens, merges of
letter pairs (so a token is 1-2 characters), filler ``[PADn]`` tokens up to the vocab size and
Qwen's specials ``<|endoftext|>`` (BOS, PAD), ``<|im_start|>``, ``<|im_end|>`` (EOS) at Qwen's ids
(151643-151645). Texts therefore split into about twice as many tokens as with the real Qwen
tokenizer: texts/s on this file is not comparable to the real model, **tokens/s is**.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedclf.errors import BenchError

ARCH = "qwen3"
DTYPES = ("f16", "q8_0")
#: half-width of the uniform distribution with std 0.02 (Qwen3's initializer_range)
_UNIFORM_HALF_WIDTH = 0.02 * math.sqrt(3.0)
#: values generated per chunk (32 MB of float32)
_CHUNK_VALUES = 8 * 1024 * 1024
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
#: published Qwen3-8B figures (model card): 8.2 B parameters, 6.95 B without embeddings
PUBLISHED_PARAMS = 8.2e9
PUBLISHED_NON_EMBEDDING_PARAMS = 6.95e9


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # numpy order (rows, cols); GGUF's ne is the reverse
    kind: str  # "matrix" (F16/Q8_0) or "norm" (F32)

    @property
    def n_params(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Qwen3Shape:
    """Hyper-parameters of a Qwen3 dense model; the defaults are Qwen3-8B's."""

    layers: int = 36
    hidden: int = 4096
    ffn: int = 12288
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    vocab: int = 151936
    context: int = 40960
    rope_theta: float = 1_000_000.0
    rms_eps: float = 1e-6
    tied: bool = False
    #: id of <|endoftext|> (then <|im_start|>, <|im_end|>); None: the last three ids
    first_special: int | None = 151643
    name: str = field(default="Qwen3-8B", compare=False)

    @property
    def special_base(self) -> int:
        return self.vocab - len(SPECIAL_TOKENS) if self.first_special is None else self.first_special

    def validate(self, dtype: str = "f16") -> None:
        """Raise ValueError naming the first option llama.cpp or the chosen type cannot take."""
        if dtype not in DTYPES:
            raise BenchError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        for key in ("layers", "hidden", "ffn", "heads", "kv_heads", "head_dim", "vocab", "context"):
            if getattr(self, key) < 1:
                raise BenchError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.heads % self.kv_heads:
            raise BenchError(f"heads ({self.heads}) must be a multiple of kv-heads ({self.kv_heads})")
        if self.head_dim % 2:
            raise BenchError(f"head-dim must be even (RoPE rotates pairs), got {self.head_dim}")
        base = self.special_base
        if base < 257 or base + len(SPECIAL_TOKENS) > self.vocab:
            raise BenchError(f"vocab {self.vocab} too small: needs 256 byte tokens, >= 1 merge and "
                             f"{len(SPECIAL_TOKENS)} special tokens (at least 260)")
        if dtype == "q8_0":
            for key, n in (("hidden", self.hidden), ("ffn", self.ffn), ("heads*head-dim", self.heads * self.head_dim)):
                if n % 32:
                    raise BenchError(f"q8_0 packs rows in blocks of 32: {key} = {n} is not a multiple of 32")

    def tensors(self) -> list[TensorSpec]:
        """The tensors llama.cpp's qwen3 loader asks for, in file order."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        out = [TensorSpec("token_embd.weight", (self.vocab, h), "matrix")]
        for i in range(self.layers):
            b = f"blk.{i}."
            out += [
                TensorSpec(b + "attn_norm.weight", (h,), "norm"),
                TensorSpec(b + "attn_q.weight", (q, h), "matrix"),
                TensorSpec(b + "attn_k.weight", (kv, h), "matrix"),
                TensorSpec(b + "attn_v.weight", (kv, h), "matrix"),
                TensorSpec(b + "attn_output.weight", (h, q), "matrix"),
                TensorSpec(b + "attn_q_norm.weight", (self.head_dim,), "norm"),
                TensorSpec(b + "attn_k_norm.weight", (self.head_dim,), "norm"),
                TensorSpec(b + "ffn_norm.weight", (h,), "norm"),
                TensorSpec(b + "ffn_gate.weight", (self.ffn, h), "matrix"),
                TensorSpec(b + "ffn_up.weight", (self.ffn, h), "matrix"),
                TensorSpec(b + "ffn_down.weight", (h, self.ffn), "matrix"),
            ]
        out.append(TensorSpec("output_norm.weight", (h,), "norm"))
        if not self.tied:
            out.append(TensorSpec("output.weight", (self.vocab, h), "matrix"))
        return out

    def n_params(self) -> int:
        return sum(t.n_params for t in self.tensors())

    def n_params_non_embedding(self) -> int:
        """Without token_embd and output (the model card's "Non-Embedding" figure)."""
        return sum(t.n_params for t in self.tensors() if t.name not in ("token_embd.weight", "output.weight"))

    def describe(self) -> str:
        return (f"{self.layers} layers, hidden {self.hidden}, ffn {self.ffn}, heads {self.heads} "
                f"({self.kv_heads} kv) x {self.head_dim}, vocab {self.vocab}, context {self.context}, "
                f"{'tied' if self.tied else 'untied'} output")


PRESETS: dict[str, Qwen3Shape] = {
    "qwen3-8b": Qwen3Shape(),
    # same architecture, small dims: a few MB, loads in well under a second on a CPU
    "tiny": Qwen3Shape(layers=2, hidden=256, ffn=768, heads=4, kv_heads=2, head_dim=64, vocab=2048,
                       context=4096, first_special=None, name="Qwen3-tiny"),
}


def make_shape(preset: str = "qwen3-8b", **overrides: int | None) -> Qwen3Shape:
    """A preset with some fields replaced (None values are ignored). A changed vocab puts the
    special tokens at its last three ids."""
    if preset not in PRESETS:
        raise BenchError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    shape = PRESETS[preset]
    changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(changes) - {f for f in Qwen3Shape.__dataclass_fields__ if f != "name"})
    if unknown:
        raise BenchError(f"unknown shape option(s): {', '.join(unknown)}")
    if "vocab" in changes and changes["vocab"] != shape.vocab:
        changes["first_special"] = None
    if changes:
        shape = replace(shape, name=f"{shape.name}-custom", **changes)
    return shape


# ---------------------------------------------------------------- sizes


def _qtype(spec: TensorSpec, dtype: str):
    import gguf

    if spec.kind == "norm":
        return gguf.GGMLQuantizationType.F32
    return gguf.GGMLQuantizationType.F16 if dtype == "f16" else gguf.GGMLQuantizationType.Q8_0


def tensor_nbytes(spec: TensorSpec, dtype: str) -> int:
    """Bytes of one tensor's data (no padding): F32 norms, F16 or Q8_0 (34 bytes per 32) matrices."""
    if spec.kind == "norm":
        return 4 * spec.n_params
    if dtype == "f16":
        return 2 * spec.n_params
    return spec.n_params // 32 * 34


def estimate_bytes(shape: Qwen3Shape, dtype: str) -> int:
    """Tensor data plus 32-byte alignment; the header (vocab strings: a few MB) comes on top."""
    return sum(-(-tensor_nbytes(t, dtype) // 32) * 32 for t in shape.tensors())


# ---------------------------------------------------------------- tokenizer


def byte_tokens() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order (space is 'Ġ', newline 'Ċ')."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def synthetic_vocab(shape: Qwen3Shape) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) of exactly ``shape.vocab`` unique tokens."""
    import gguf

    tokens = byte_tokens()
    letters = "abcdefghijklmnopqrstuvwxyz"
    space = tokens[ord(" ")]
    pairs = [(space, c) for c in letters] + [(a, b) for a in letters for b in letters]
    pairs = pairs[: shape.special_base - len(tokens)]
    merges = [f"{a} {b}" for a, b in pairs]
    tokens += [a + b for a, b in pairs]
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    while len(tokens) < shape.vocab:
        i = len(tokens)
        if shape.special_base <= i < shape.special_base + len(SPECIAL_TOKENS):
            tokens.append(SPECIAL_TOKENS[i - shape.special_base])
            types.append(int(gguf.TokenType.CONTROL))
        else:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
    return tokens, types, merges


# ---------------------------------------------------------------- weights


def _chunks(spec: TensorSpec, dtype: str, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The tensor's bytes as arrays, a block of rows at a time."""
    if spec.kind == "norm":
        yield (1.0 + rng.uniform(-0.05, 0.05, size=spec.shape)).astype(np.float32)
        return
    import gguf
    from gguf.quants import quantize

    rows, cols = spec.shape
    step = max(1, _CHUNK_VALUES // cols)
    for r0 in range(0, rows, step):
        x = rng.random((min(step, rows - r0), cols), dtype=np.float32)
        x -= 0.5
        x *= 2.0 * _UNIFORM_HALF_WIDTH
        yield x.astype(np.float16) if dtype == "f16" else quantize(x, gguf.GGMLQuantizationType.Q8_0)


def check_target(path: str | os.PathLike[str], shape: Qwen3Shape, dtype: str, overwrite: bool = False) -> Path:
    """Validate shape and type, and that ``path`` can take the file (no clobbering, enough disk)."""
    shape.validate(dtype)
    path = Path(path)
    if path.exists() and not overwrite:
        raise BenchError(f"{path} exists (use --force to overwrite)")
    if not path.parent.is_dir():
        raise BenchError(f"directory {path.parent} does not exist")
    need = estimate_bytes(shape, dtype) + 64 * 2**20
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise BenchError(f"not enough disk space in {path.parent}: need {need / 1e9:.2f} GB, {free / 1e9:.2f} GB free")
    return path


@dataclass(frozen=True)
class WriteResult:
    path: Path
    n_tensors: int
    n_params: int
    file_bytes: int
    seconds: float


def write_gguf(
    path: str | os.PathLike[str],
    shape: Qwen3Shape,
    dtype: str = "f16",
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> WriteResult:
    """Write ``shape`` with random weights to ``path`` (via ``path.part``, renamed at the end).

    ``on_progress(bytes_written, tensors_done)`` is called after every chunk. The same seed gives
    the same file, byte for byte. Raises ValueError for bad shapes / an existing file and OSError
    when the disk is too small.
    """
    import gguf

    if seed < 0:
        raise BenchError(f"seed must be >= 0, got {seed}")
    path = check_target(path, shape, dtype, overwrite)
    t0 = time.perf_counter()
    specs = shape.tensors()
    part = path.with_name(path.name + ".part")
    writer = gguf.GGUFWriter(str(part), ARCH)
    try:
        _add_metadata(writer, shape, dtype, seed)
        for spec in specs:
            writer.add_tensor_info(spec.name, spec.shape, np.dtype(np.float32 if spec.kind == "norm" else np.float16),
                                   tensor_nbytes(spec, dtype), raw_dtype=_qtype(spec, dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None  # opened by write_header_to_file
        fout = writer.fout[0]
        for i, spec in enumerate(specs):
            writer.write_padding(fout, fout.tell())  # each tensor starts aligned
            rng = np.random.default_rng([seed, i])
            written = 0
            for block in _chunks(spec, dtype, rng):
                block.tofile(fout)
                written += block.nbytes
                if on_progress is not None:
                    on_progress(block.nbytes, i + (written == tensor_nbytes(spec, dtype)))
            if written != tensor_nbytes(spec, dtype):  # pragma: no cover - a bug, not an input error
                raise RuntimeError(f"{spec.name}: wrote {written} bytes, expected {tensor_nbytes(spec, dtype)}")
            writer.write_padding(fout, written)
        writer.close()
        part.replace(path)
    except BaseException:
        writer.close()
        part.unlink(missing_ok=True)
        raise
    return WriteResult(path, len(specs), shape.n_params(), path.stat().st_size, time.perf_counter() - t0)


def _add_metadata(writer, shape: Qwen3Shape, dtype: str, seed: int) -> None:
    import gguf

    writer.add_name(f"{shape.name} synthetic (random weights, seed {seed})")
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    tokens, types, merges = synthetic_vocab(shape)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    base = shape.special_base
    writer.add_bos_token_id(base)  # <|endoftext|>, as Qwen3's GGUF files
    writer.add_eos_token_id(base + 2)  # <|im_end|>
    writer.add_pad_token_id(base)
    writer.add_add_bos_token(False)
    writer.add_bool("embedclf.synthetic", True)
    writer.add_uint64("embedclf.seed", seed)
