"""Zero-shot heads: built from label names or descriptions alone, no labelled data. Pure.

Each label gets a text (its description, else its name made readable:
``card_arrival`` -> ``card arrival``). The embedder embeds those texts; the
head scores a text by the cosine between its embedding and each label's, and
turns the cosines into probabilities with ``softmax(cosine / temperature)``.

Such a head is an ordinary :class:`~embedclf.heads.mlp.MLPHead` with one
linear layer: inputs are L2-normalised (``input_norm``), the weight rows are
the L2-normalised label embeddings, the bias and the centre are zero, and
the temperature buffer holds ``temperature``. It is therefore stored,
loaded and served exactly like a trained head (safetensors + JSON config),
and a later trained version of the same name simply replaces it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from embedclf.embedders.base import Embedder, l2_normalize
from embedclf.errors import DataError
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead

#: softmax temperature over cosines. The cosines of one text to different labels differ
#: by a few hundredths, so 1.0 would give almost flat probabilities. 0.05 gave the lowest
#: log-loss of {0.02, 0.05, 0.1} on BANKING77's *train* split (MiniLM, label names), which
#: a zero-shot head never trains on; the test split was not used to choose it.
DEFAULT_TEMPERATURE = 0.05
KIND = "zeroshot"


def label_text(name: str) -> str:
    """A label name as words: ``card_arrival`` -> ``card arrival``, ``lostCard`` -> ``lost card``."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    s = re.sub(r"[_\-./:]+", " ", s)
    return " ".join(s.split()).lower() or name


@dataclass(frozen=True)
class LabelSpec:
    """A label and the text that stands for it (a description, or the readable name)."""

    label: str
    text: str
    #: True when ``text`` is a given description, False when it comes from the name
    described: bool = False

    @classmethod
    def of(cls, label: str, description: str | None = None) -> LabelSpec:
        label = str(label).strip()
        if not label:
            raise DataError("a label name is empty")
        desc = " ".join((description or "").split())
        return cls(label, desc, True) if desc else cls(label, label_text(label), False)


def check_labels(specs: Sequence[LabelSpec]) -> None:
    if len(specs) < 2:
        raise DataError(f"a zero-shot head needs at least 2 labels, got {len(specs)}")
    seen: set[str] = set()
    for s in specs:
        if s.label in seen:
            raise DataError(f"label {s.label!r} is listed more than once")
        seen.add(s.label)


def head_from_label_vectors(vectors: np.ndarray, temperature: float = DEFAULT_TEMPERATURE) -> MLPHead:
    """The cosine head over raw label embeddings ``vectors`` (one row per label)."""
    if not temperature > 0:
        raise DataError(f"temperature must be > 0, got {temperature}")
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[0] < 2:
        raise DataError(f"expected label embeddings of shape [labels >= 2, dim], got {v.shape}")
    if not np.isfinite(v).all() or (np.linalg.norm(v, axis=1) == 0).any():
        raise DataError("a label embedding is zero or not finite")
    config = HeadConfig(input_dim=v.shape[1], num_labels=v.shape[0], num_layers=1, dropout=0.0,
                        input_norm=True, linear_skip=False)
    head = MLPHead(config)
    with torch.no_grad():
        linear = head.mlp[0]
        assert isinstance(linear, nn.Linear) and len(head.mlp) == 1
        linear.weight.copy_(torch.from_numpy(l2_normalize(v)))
        linear.bias.zero_()
        head.center.zero_()
        head.temperature.fill_(float(temperature))
    head.eval()
    return head


def build_zeroshot(
    embedder: Embedder, specs: Sequence[LabelSpec], temperature: float = DEFAULT_TEMPERATURE
) -> HeadArtifact:
    """Embed each label's text and return the head as a storable artifact."""
    check_labels(specs)
    vectors = embedder.embed([s.text for s in specs])
    head = head_from_label_vectors(vectors, temperature)
    params = {"kind": KIND, "temperature": temperature, "label_texts": {s.label: s.text for s in specs}}
    return HeadArtifact.from_head(head, [s.label for s in specs], embedder.model_id, train_params=params)
