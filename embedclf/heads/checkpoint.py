"""Saving and loading heads as weights + config, never as a pickled object.

A :class:`HeadArtifact` is everything needed to rebuild a head anywhere:
the config (JSON), the label list, the embedder id it was trained on and the
weights as ``safetensors`` bytes. The store keeps these fields in columns;
files on disk use a directory with ``config.json`` + ``head.safetensors``.

A hybrid head (``config.tfidf`` set) stores its TF-IDF featurizer in the same
safetensors blob: vocabulary bytes/offsets and idf weights under ``tfidf.``, next
to the sparse member's ``sparse.weight``/``sparse.bias``; the featurizer's small
JSON config is part of the head config. Loading is strict both ways: a missing or
unexpected tensor, or a config the tensors do not match, is a ``ValueError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from embedclf.errors import HeadLoadError
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.heads.multilabel import MultiLabelConfig, MultiLabelHead, is_multi_label
from embedclf.heads.sparse import TENSOR_PREFIX
from embedclf.heads.tfidf import TfidfFeaturizer

FORMAT_VERSION = 1
AnyConfig = HeadConfig | MultiLabelConfig


def config_from_dict(data: dict) -> AnyConfig:
    """A stored config: multi-label ones carry ``head_type``; the rest are single-label (strict either way)."""
    if data.get("head_type") is not None:
        return MultiLabelConfig.from_dict(data)
    return HeadConfig.from_dict(data)


def weights_to_bytes(head: MLPHead) -> bytes:
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    if not is_multi_label(head) and head.sparse is not None:  # a multi-label head's state dict has them already
        if head.sparse.featurizer is None:
            raise ValueError("the head's TF-IDF member has no featurizer to save")
        state.update({TENSOR_PREFIX + k: v.contiguous() for k, v in head.sparse.featurizer.to_tensors().items()})
    return st_save(state)


def head_from_weights(config: AnyConfig, blob: bytes) -> MLPHead | MultiLabelHead:
    if isinstance(config, MultiLabelConfig):  # its own state dict carries its featurizer (tfidf.*)
        ml = MultiLabelHead(config)
        ml.load_state_dict(st_load(blob), strict=True)
        ml.eval()
        return ml
    head = MLPHead(config)
    tensors = st_load(blob)
    feats = {k[len(TENSOR_PREFIX):]: v for k, v in tensors.items() if k.startswith(TENSOR_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(TENSOR_PREFIX)}
    if head.sparse is None and feats:
        raise ValueError(f"unexpected TF-IDF tensors in a head without a TF-IDF member: {sorted(feats)[:3]}")
    head.load_state_dict(state, strict=True)
    if head.sparse is not None:
        head.sparse.attach(TfidfFeaturizer.from_tensors(head.sparse.tfidf_config, feats))
    head.eval()
    return head


@dataclass
class HeadArtifact:
    config: AnyConfig
    labels: list[str]
    embedder_id: str
    weights: bytes
    metrics: dict = field(default_factory=dict)
    train_params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.labels) != self.config.num_labels:
            raise ValueError("label list does not match the head's number of outputs")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("duplicate labels")

    @classmethod
    def from_head(cls, head: MLPHead, labels: list[str], embedder_id: str, **extra: dict) -> HeadArtifact:
        return cls(head.config, list(labels), embedder_id, weights_to_bytes(head), **extra)

    def build(self) -> MLPHead | MultiLabelHead:
        return head_from_weights(self.config, self.weights)

    def meta(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "labels": self.labels,
            "embedder_id": self.embedder_id,
            "metrics": self.metrics,
            "train_params": self.train_params,
        }

    def save_dir(self, path: str | Path) -> Path:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(self.meta(), indent=2, sort_keys=True))
        (out / "head.safetensors").write_bytes(self.weights)
        return out

    @classmethod
    def load_dir(cls, path: str | Path) -> HeadArtifact:
        p = Path(path)
        meta = json.loads((p / "config.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise HeadLoadError(f"unsupported head format {meta.get('format')!r} in {p}")
        return cls(
            config_from_dict(meta["config"]),
            meta["labels"],
            meta["embedder_id"],
            (p / "head.safetensors").read_bytes(),
            meta.get("metrics", {}),
            meta.get("train_params", {}),
        )


def same_weights(a: MLPHead, b: MLPHead) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
