"""Train a head and score it against the TF-IDF baseline on the same split. Pure."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from embedclf.embedders.base import Embedder, ProgressFn
from embedclf.training.baseline import tfidf_baseline
from embedclf.training.metrics import classification_report
from embedclf.training.split import LabelEncoder
from embedclf.training.trainer import EpochCallback, TrainParams, TrainResult, train_head


@dataclass
class Evaluation:
    result: TrainResult
    metrics: dict
    baseline: dict
    n_train: int
    n_test: int
    embedder_id: str
    embed_seconds: float
    confusion: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))

    def summary(self) -> dict:
        m, b = self.metrics, self.baseline
        return {
            "accuracy": round(m["accuracy"], 4),
            "macro_f1": round(m["macro_f1"], 4),
            "map3": round(m["map3"], 4),
            "top3_accuracy": round(m["top3_accuracy"], 4),
            "log_loss": round(m["log_loss"], 4),
            "baseline_tfidf_accuracy": round(b["accuracy"], 4),
            "baseline_tfidf_macro_f1": round(b["macro_f1"], 4),
            "baseline_tfidf_map3": round(b["map3"], 4),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_labels": len(self.result.labels),
            "embedder": self.embedder_id,
            "embed_seconds": round(self.embed_seconds, 2),
            "train_seconds": round(self.result.seconds, 2),
            "baseline_seconds": round(b["seconds"], 2),
            "best_epoch": self.result.best_epoch,
            "temperature": round(self.result.temperature, 4),
            "val_accuracy": round(self.result.val_metrics["accuracy"], 4),
        }


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def evaluate_head(
    embedder: Embedder,
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    test_texts: Sequence[str],
    test_labels: Sequence[str],
    params: TrainParams = TrainParams(),
    *,
    embed_progress: Callable[[int], ProgressFn] | None = None,
    on_epoch: EpochCallback | None = None,
) -> Evaluation:
    """Embed both sides, train on ``train``, report on ``test`` next to the baseline.

    ``embed_progress(total)`` may return a per-chunk progress callback.
    """
    unseen = sorted(set(test_labels) - set(train_labels))
    if unseen:
        shown = ", ".join(repr(u) for u in unseen[:5])
        raise ValueError(f"{len(unseen)} test label(s) never appear in training: {shown}")
    total = len(train_texts) + len(test_texts)
    progress = embed_progress(total) if embed_progress else None
    t0 = time.perf_counter()
    X_train = embedder.embed(list(train_texts), progress)
    X_test = embedder.embed(list(test_texts), progress)
    embed_seconds = time.perf_counter() - t0

    result = train_head(X_train, train_labels, params, on_epoch)
    enc = LabelEncoder(tuple(result.labels))
    y_train, y_test = enc.encode(train_labels), enc.encode(test_labels)
    proba = result.head.predict_proba(X_test)
    metrics = classification_report(proba, y_test)
    baseline = tfidf_baseline(train_texts, y_train, test_texts, y_test, len(result.labels), seed=params.seed)
    return Evaluation(
        result=result,
        metrics=metrics,
        baseline=baseline,
        n_train=len(train_texts),
        n_test=len(test_texts),
        embedder_id=embedder.model_id,
        embed_seconds=embed_seconds,
        confusion=confusion_matrix(y_test, proba.argmax(1), len(result.labels)),
    )
