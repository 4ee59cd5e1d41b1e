"""Builds ONNX files of a local sentence-transformers model, offline, into the model cache.

Recipe (chosen by measurement, see the README's "Embedders" section):

1. ``torch.onnx.export`` (TorchScript exporter, opset 17) of the Hugging Face model loaded with
   eager attention, wrapped with the sentence-transformers pooling (mean or CLS), so the graph
   maps ``input_ids, attention_mask`` to one pooled vector per text (not normalised);
2. ONNX Runtime's transformer optimizer fuses BERT blocks (Attention, SkipLayerNormalization,
   BiasGelu, EmbedLayerNormalization) -> ``model.onnx`` (fp32);
3. ``quant=int8``: ``quantize_dynamic`` with int8 weights, one scale per output channel ->
   ``model-int8.onnx``. Activations get one scale per tensor at run time, so a text's vector
   depends a little on its batch. Per-tensor weight scales (the quantizer's default) measured
   mean cosine 0.969 to torch on BANKING77, per-channel 0.993.
4. ``quant=int8w``: int8 weights in blocks of 32 (``MatMulNBits``, accuracy level 4: activations
   quantised per row and block at run time) -> ``model-int8w.onnx``. Cosine >= 0.9995 to torch,
   independent of the batch; the fused Attention op's QKV projection stays fp32.

Files live in ``<model_dir>/onnx/<name>-<key>/`` where ``key`` hashes the source model's files
and :data:`RECIPE`: a changed model or recipe gets a new directory, a missing file is rebuilt,
and nothing is ever downloaded. Every new file is checked against the torch model on a few
texts before it is published (written to a temporary name, then renamed). Builds are
serialised by a lock file, so workers starting together build once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedclf.embedders.spec import SpecError

logger = logging.getLogger(__name__)

#: changes whenever the export, fusion or quantisation changes the files (new cache directory)
RECIPE = "export-eager-opset17+bert-fusion+int8-per-channel/v1"
QUANTS = ("none", "int8", "int8w")
FILE_NAMES = {"none": "model.onnx", "int8": "model-int8.onnx", "int8w": "model-int8w.onnx"}
#: a new file must agree with torch at least this well on PROBE_TEXTS (cosine), or it is not published
MIN_PROBE_COSINE = {"none": 0.9999, "int8": 0.95, "int8w": 0.999}
PROBE_TEXTS = [
    "I lost my card",
    "Why was my card payment declined at the supermarket this morning?",
    "What is the exchange rate for euros?",
    "a",
]
#: source files whose bytes define the vectors (hashed into the cache key)
KEY_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "modules.json",
             "sentence_bert_config.json", "1_Pooling/config.json")
TRANSFORMER_TYPES = {"sentence_transformers.models.Transformer", "sentence_transformers.models.transformer.Transformer"}
POOLING_TYPES = {"sentence_transformers.models.Pooling", "sentence_transformers.models.pooling.Pooling"}
NORMALIZE_TYPES = {"sentence_transformers.models.Normalize", "sentence_transformers.models.normalize.Normalize"}
QUANT_NAMES = {"int8": "int8 (dynamic, per channel)", "int8w": "int8 weights (blocks of 32, MatMulNBits)"}
#: model types ONNX Runtime's BERT fusions are applied to; others are exported unfused
FUSED_MODEL_TYPES = {"bert"}


@dataclass(frozen=True)
class SourceModel:
    """A local sentence-transformers model: Transformer -> Pooling (mean|cls) [-> Normalize]."""

    path: Path
    name: str
    pooling: str
    normalize: bool
    max_seq_length: int
    model_type: str
    num_heads: int
    hidden_size: int
    pad_id: int

    @property
    def tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json"


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path.parent}: no {path.name} (not a sentence-transformers model directory)") from None


def read_source(target: str) -> SourceModel:
    """Describe the sentence-transformers model ``target`` names (``pip:PACKAGE`` or a directory)."""
    from embedclf.embedders.st import resolve_st_target

    load_from, name, is_local = resolve_st_target(target)
    if not is_local:
        raise SpecError(f"onnx embedders build from a local model (pip:PACKAGE or a directory), "
                        f"never a hub download: {target!r}")
    path = Path(load_from)
    modules = _json(path / "modules.json")
    kinds = [m.get("type") for m in modules]
    if (len(modules) not in (2, 3) or kinds[0] not in TRANSFORMER_TYPES or kinds[1] not in POOLING_TYPES
            or (len(modules) == 3 and kinds[2] not in NORMALIZE_TYPES) or modules[0].get("path", "") != ""):
        raise SpecError(f"{path}: onnx export supports Transformer -> Pooling [-> Normalize] pipelines, not {kinds}")
    pool_cfg = _json(path / modules[1]["path"] / "config.json")
    modes = [m for m in ("mean_tokens", "cls_token") if pool_cfg.get(f"pooling_mode_{m}")]
    others = [k for k, v in pool_cfg.items() if k.startswith("pooling_mode_") and v
              and k not in ("pooling_mode_mean_tokens", "pooling_mode_cls_token")]
    if len(modes) != 1 or others:
        raise SpecError(f"{path}: onnx export supports mean or CLS pooling only, not {pool_cfg}")
    config = _json(path / "config.json")
    st_cfg = _json(path / "sentence_bert_config.json") if (path / "sentence_bert_config.json").is_file() else {}
    if not (path / "tokenizer.json").is_file():
        raise SpecError(f"{path}: no tokenizer.json (a fast tokenizer is needed)")
    return SourceModel(
        path=path, name=name, pooling="mean" if modes[0] == "mean_tokens" else "cls", normalize=len(modules) == 3,
        max_seq_length=int(st_cfg.get("max_seq_length") or config.get("max_position_embeddings") or 512),
        model_type=str(config.get("model_type", "")), num_heads=int(config.get("num_attention_heads", 0)),
        hidden_size=int(config.get("hidden_size", 0)), pad_id=int(config.get("pad_token_id") or 0),
    )


def source_key(src: SourceModel) -> str:
    """Hash of the source files that define the vectors, and of :data:`RECIPE`."""
    h = hashlib.sha256(RECIPE.encode())
    for rel in KEY_FILES:
        p = src.path / rel
        if p.is_file():
            h.update(rel.encode() + b"\0")
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def build_dir(src: SourceModel, model_dir: str | Path | None = None) -> Path:
    if model_dir is None:
        from embedclf.embedders.download import default_model_dir

        model_dir = default_model_dir()
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", src.name)
    return Path(model_dir).expanduser() / "onnx" / f"{safe}-{source_key(src)}"


def ensure_built(src: SourceModel, quant: str, model_dir: str | Path | None = None,
                 log=None) -> Path:
    """Path of the ONNX file for ``quant``, building it (and the fp32 file it derives from) if missing."""
    if quant not in QUANTS:
        raise SpecError(f"onnx option quant={quant!r} is not one of {', '.join(QUANTS)}")
    out_dir = build_dir(src, model_dir)
    target = out_dir / FILE_NAMES[quant]
    if target.is_file():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same files
        if not target.is_file():
            _build(src, out_dir, quant, log or logger.info)
    return target


def _build(src: SourceModel, out_dir: Path, quant: str, log) -> None:
    import torch

    t0 = time.perf_counter()
    fp32 = out_dir / FILE_NAMES["none"]
    model = _load_torch(src)
    versions: dict[str, str] = {"torch": str(torch.__version__)}
    if not fp32.is_file():
        log(f"exporting {src.name} to ONNX (fp32) in {out_dir} ...")
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            raw = Path(tmp) / "raw.onnx"
            _export(src, model, raw)
            staged = Path(tmp) / "fused.onnx"
            _fuse(src, raw, staged)
            _check(src, model, staged, "none")
            os.replace(staged, fp32)
    if quant != "none" and not (out_dir / FILE_NAMES[quant]).is_file():
        log(f"quantising {src.name} to {QUANT_NAMES[quant]} ...")
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            staged = Path(tmp) / f"{quant}.onnx"
            (_quantize if quant == "int8" else _quantize_weights)(fp32, staged)
            _check(src, model, staged, quant)
            os.replace(staged, out_dir / FILE_NAMES[quant])
    import onnx
    import onnxruntime

    versions.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    manifest: dict[str, Any] = {"source": str(src.path), "name": src.name, "recipe": RECIPE, "pooling": src.pooling,
                "max_seq_length": src.max_seq_length, "versions": versions,
                "files": sorted(p.name for p in out_dir.glob("*.onnx"))}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"built {', '.join(manifest['files'])} in {time.perf_counter() - t0:.1f}s")


class _Pooled:
    """Factory for the export wrapper (a torch module; torch is imported only when building)."""

    @staticmethod
    def make(model, pooling: str):
        import torch

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                if pooling == "cls":
                    return hidden[:, 0]
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

        return Pooled().eval()


def _load_torch(src: SourceModel):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a weight-loading bar per build, in worker logs
    # eager attention: the exported graph then has the pattern ONNX Runtime's Attention fusion knows
    model = AutoModel.from_pretrained(str(src.path), attn_implementation="eager")
    return _Pooled.make(model.eval(), src.pooling)


def _export(src: SourceModel, model, path: Path) -> None:
    import warnings

    import torch

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 1037, 102, src.pad_id]], dtype=torch.int64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python bools in transformers' mask code
        torch.onnx.export(model, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["pooled"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "pooled": {0: "batch"}})


def _fuse(src: SourceModel, raw: Path, out: Path) -> None:
    if src.model_type not in FUSED_MODEL_TYPES or not (src.num_heads and src.hidden_size):
        os.replace(raw, out)
        return
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet_logging():  # one INFO line per fusion, in worker logs
        fused = optimize_model(str(raw), model_type="bert", num_heads=src.num_heads, hidden_size=src.hidden_size,
                               opt_level=1)
        fused.save_model_to_file(str(out))


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """ONNX Runtime's optimizer and quantizer log through the root logger (INFO per fusion, a WARNING
    hint about pre-processing that applies to static quantisation only)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _quantize(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_logging():
        # fused ops (com.microsoft domain) have no ONNX shape inference: declare float tensors
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def _quantize_weights(fp32: Path, out: Path) -> None:
    """int8 weights in blocks of 32 (MatMulNBits); activations are quantised per row and block at run time
    (accuracy level 4), so a text's vector does not depend on the other texts of its batch."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet_logging():
        q = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=8, block_size=32, is_symmetric=True, accuracy_level=4)
        q.process()
        q.model.save_model_to_file(str(out), use_external_data_format=False)


def _check(src: SourceModel, model, path: Path, quant: str) -> None:
    """Refuse to publish a file whose vectors disagree with the torch model's on PROBE_TEXTS."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(src.tokenizer_file))
    tok.enable_truncation(src.max_seq_length)
    tok.enable_padding(pad_id=src.pad_id)
    enc = tok.encode_batch(PROBE_TEXTS)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    if not np.all(cos >= MIN_PROBE_COSINE[quant]):
        raise RuntimeError(f"ONNX build check failed for {path.name}: cosine to torch {cos.min():.5f} "
                           f"< {MIN_PROBE_COSINE[quant]}")
