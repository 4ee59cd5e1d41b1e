"""What the CLI, the benchmarks and the demo share about heads: train one on a split, store it as a version.

A thin service layer between the adapters (click commands, ``bench``) and the pure core
(``training``, ``heads``) plus the store: each caller parses its own options and prints its own
output; the steps in between live here once.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.engine import Engine

from embedclf.embedders.base import Embedder
from embedclf.errors import DataError
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.store import repository
from embedclf.training.evaluate import Abstention, Evaluation, evaluate_head
from embedclf.training.split import LabelEncoder, stratified_split
from embedclf.training.trainer import TrainParams, train_head


def store_version(engine: Engine, name: str, head: Any, labels: Sequence[str], embedder_id: str, *,
                  activate: bool = True, created_by: str | None = None, n_train: int | None = None,
                  data_fingerprint: str | None = None, metrics: dict | None = None,
                  train_params: dict | None = None) -> int:
    """Store a trained head module (any head type) as the next version of ``name``; returns the version."""
    artifact = HeadArtifact.from_head(head, list(labels), embedder_id, metrics=metrics or {},
                                      train_params=train_params or {})
    return repository.add_head_version(engine, name, artifact, activate=activate,
                                       created_by=created_by or getpass.getuser(),
                                       data_fingerprint=data_fingerprint, n_train=n_train)


def split(labels: Sequence[str], test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of a stratified (training, held-out) split."""
    y = LabelEncoder.fit(labels).encode(labels)
    keep, held = stratified_split(y, test_size, seed=seed)
    return [int(i) for i in keep], [int(i) for i in held]


def halves(texts: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """Out-of-scope examples shuffled with ``seed`` and cut in two: (validation, test)."""
    import random

    distinct = list(dict.fromkeys(t for t in texts if isinstance(t, str) and t.strip()))
    if len(distinct) < 2:
        raise DataError(f"out-of-scope examples: {len(distinct)} distinct non-empty text(s); at least 2 are needed "
                        "(half choose the threshold, half report its recall)")
    random.Random(seed).shuffle(distinct)
    mid = (len(distinct) + 1) // 2
    return distinct[:mid], distinct[mid:]


@dataclass
class TrainedVersion:
    version: int
    evaluation: Evaluation
    summary: dict = field(default_factory=dict)


def train_version(engine: Engine, embedder: Embedder, name: str, texts: Sequence[str], labels: Sequence[str],
                  params: TrainParams, *, test_size: float, abstain_precision: float | None = None,
                  activate: bool = True, data_fingerprint: str | None = None, extra_summary: dict | None = None,
                  extra_train_params: dict | None = None,
                  on_epoch: Callable[..., None] | None = None,
                  embed_progress: Callable[[int], Callable[[int], None]] | None = None,
                  oos_texts: Sequence[str] | None = None) -> TrainedVersion:
    """Hold out a stratified ``test_size`` split, train and report on it next to TF-IDF, store the head.

    The stored version carries the report (``metrics``) and the training parameters.

    ``oos_texts``: examples of what the head should refuse (out of scope). Half of them (shuffled
    with the seed) and a stratified ``params.val_fraction`` of the training part choose the
    abstention threshold on the kNN out-of-scope score (:mod:`embedclf.heads.oos`, stored with the
    head); the other half reports out-of-scope recall next to the held-out split.
    """
    keep, held = split(labels, test_size, params.seed)
    pick = lambda idx, xs: [xs[i] for i in idx]  # noqa: E731
    abstention = Abstention(target_precision=abstain_precision) if abstain_precision else None
    train_idx, val = keep, None
    if oos_texts is not None:
        oos_val, oos_test = halves(oos_texts, params.seed)
        sub_keep, sub_val = split(pick(keep, labels), params.val_fraction, params.seed)
        train_idx = [keep[i] for i in sub_keep]
        val_idx = [keep[i] for i in sub_val]
        val = (pick(val_idx, texts), pick(val_idx, labels))
        abstention = Abstention(target_precision=abstain_precision or 0.95, oos_val=oos_val, oos_test=oos_test)
    ev = evaluate_head(
        embedder, pick(train_idx, texts), pick(train_idx, labels), pick(held, texts), pick(held, labels),
        params, embed_progress=embed_progress, on_epoch=on_epoch, val=val, abstention=abstention,
    )
    summary = ev.summary() | (extra_summary or {})
    version = store_version(engine, name, ev.result.head, ev.result.labels, embedder.model_id, activate=activate,
                            n_train=len(keep), data_fingerprint=data_fingerprint,
                            metrics=summary | {"report": ev.report},
                            train_params=params.to_dict() | (extra_train_params or {}))
    summary.update(head=name, version=version, active=activate)
    return TrainedVersion(version, ev, summary)


def quick_version(engine: Engine, name: str, X: Any, labels: Sequence[str], embedder_id: str, epochs: int,
                  created_by: str, layers: int | None = None, texts: Sequence[str] | None = None,
                  trained: list | None = None, knn_member: str = "auto") -> int:
    """Train a head on ready embeddings with no held-out report and store it active (benchmarks).

    ``layers``: 1 for a single softmax layer (no MLP, no second member); default: MLP + softmax
    regression. With ``texts`` (the texts of ``X``) the head gets the TF-IDF member too, as
    ``heads train``'s default head does, and the kNN member when the validation split keeps it (``auto``, as
    ``heads train``; ``knn_member``). ``trained``: a list the trained head is appended to."""
    params = TrainParams(epochs=epochs) if layers is None else TrainParams(
        epochs=epochs, num_layers=layers, linear_member=layers > 1)
    if texts is not None:
        params = replace(params, tfidf_member=True, knn_member=knn_member)
    result = train_head(X, list(labels), params, texts=None if texts is None else list(texts))
    if trained is not None:
        trained.append(result.head)
    return store_version(engine, name, result.head, result.labels, embedder_id, created_by=created_by,
                         n_train=len(labels))
