"""Train a head and score it against the TF-IDF baseline on the same split. Pure.

Optionally the head learns to abstain (see :mod:`embedclf.training.abstain`):
the threshold is chosen on validation texts only (the caller's ``val`` +
``oos_val``, or the trainer's own validation slice), then reported on the
test texts and the out-of-scope test texts.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from embedclf.embedders.base import Embedder, ProgressFn
from embedclf.errors import DataError
from embedclf.training.abstain import (
    DEFAULT_MAX_ACCURACY_LOSS,
    DEFAULT_OOS_BETA,
    DEFAULT_OOS_K,
    AbstainRule,
    choose_threshold,
    labels_oos_index,
    scope_metrics,
)
from embedclf.training.baseline import tfidf_baseline
from embedclf.training.metrics import classification_report, confusion_matrix
from embedclf.training.quality import build_report, softmax
from embedclf.training.split import LabelEncoder
from embedclf.training.trainer import EpochCallback, TrainParams, TrainResult, train_head

__all__ = ["Evaluation", "Abstention", "confusion_matrix", "evaluate_head"]


@dataclass(frozen=True)
class Abstention:
    """How to choose the abstention threshold (None fields: that source is not used)."""

    #: target precision of answered validation texts, used when there are no OOS validation texts
    target_precision: float = 0.95
    #: out-of-scope texts: trained as ``oos_label`` (if set), validation (threshold), test (report)
    oos_train: Sequence[str] = ()
    oos_val: Sequence[str] = ()
    oos_test: Sequence[str] = ()
    oos_label: str | None = None
    #: with OOS validation texts: in-scope validation accuracy the threshold may cost (None: Youden's J)
    max_accuracy_loss: float | None = DEFAULT_MAX_ACCURACY_LOSS
    #: with a validation set and OOS validation texts: the kNN OOS score's beta and k (heads/oos.py);
    #: the threshold then applies to the discounted confidence. beta 0: the top probability, as before
    oos_beta: float = DEFAULT_OOS_BETA
    oos_k: int = DEFAULT_OOS_K


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
    report: dict = field(repr=False, default_factory=dict)
    abstain: AbstainRule | None = None
    #: test figures with abstention: in-scope accuracy, answered precision, OOS recall
    scope: dict = field(default_factory=dict)

    def summary(self) -> dict:
        m, b = self.metrics, self.baseline
        cal = self.report.get("calibration", {})
        out = {
            "accuracy": round(m["accuracy"], 4),
            "macro_f1": round(m["macro_f1"], 4),
            "map3": round(m["map3"], 4),
            "top3_accuracy": round(m["top3_accuracy"], 4),
            "log_loss": round(m["log_loss"], 4),
            "ece": round(cal["ece"], 4) if "ece" in cal else None,
            "ece_uncalibrated": round(cal["ece_uncalibrated"], 4) if "ece" in cal else None,
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
            "members": {name: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
                        for name, m in self.result.members.items()},
            "knn_member": self.result.knn_choice,
            "top_confused": [f"{p['true']} -> {p['predicted']} ({p['count']})"
                             for p in self.report.get("confused_pairs", [])[:3]],
        }
        if self.abstain is not None:
            out["abstain_threshold"] = round(self.abstain.threshold, 6)
            out["abstain_criterion"] = self.abstain.criterion
            oos_score = self.result.head.config.oos_score
            out["abstain_oos_score"] = (f"{oos_score['kind']} k {oos_score['k']} beta {oos_score['beta']:g}"
                                        if oos_score else "top probability")
            for k, v in self.scope.items():
                out[k] = round(v, 4) if isinstance(v, float) else v
        return out


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
    val: tuple[Sequence[str], Sequence[str]] | None = None,
    abstention: Abstention | None = None,
) -> Evaluation:
    """Embed every side once, train on ``train``, report on ``test`` next to the baseline.

    ``embed_progress(total)`` may return a per-chunk progress callback. ``val``
    (texts, labels) replaces the trainer's own validation slice. With
    ``abstention`` the head gets an abstention threshold stored in its config.
    """
    ab = abstention
    oos_label = ab.oos_label if ab is not None and ab.oos_train else None
    known = set(train_labels) | ({oos_label} if oos_label else set())
    for what, labels in (("test", test_labels), ("validation", val[1] if val else ())):
        unseen = sorted(set(labels) - known)
        if unseen:
            shown = ", ".join(repr(u) for u in unseen[:5])
            raise DataError(f"{len(unseen)} {what} label(s) never appear in training: {shown}")
    if oos_label is not None and oos_label in set(train_labels):
        raise DataError(f"out-of-scope label {oos_label!r} is already an in-scope label")

    parts: dict[str, list[str]] = {"train": list(train_texts), "test": list(test_texts)}
    if val is not None:
        parts["val"] = list(val[0])
    if ab is not None:
        parts.update(oos_train=list(ab.oos_train), oos_val=list(ab.oos_val), oos_test=list(ab.oos_test))
    total = sum(len(v) for v in parts.values())
    progress = embed_progress(total) if embed_progress else None
    t0 = time.perf_counter()
    vec: dict[str, Any] = {k: embedder.embed(v, progress) if v else None for k, v in parts.items()}
    embed_seconds = time.perf_counter() - t0

    X_train, y_train_s = vec["train"], list(train_labels)
    texts_train = list(parts["train"])
    val_arg = (vec["val"], list(val[1])) if val is not None else None
    val_texts = list(parts["val"]) if val is not None else None
    if oos_label is not None:
        X_train = np.concatenate([X_train, vec["oos_train"]])
        y_train_s += [oos_label] * len(parts["oos_train"])
        texts_train += parts["oos_train"]
        if val_arg is not None and vec["oos_val"] is not None:
            val_arg = (np.concatenate([val_arg[0], vec["oos_val"]]), val_arg[1] + [oos_label] * len(parts["oos_val"]))
            val_texts = (val_texts or []) + parts["oos_val"]
    result = train_head(X_train, y_train_s, params, on_epoch, val=val_arg, texts=texts_train, val_texts=val_texts)
    enc = LabelEncoder(tuple(result.labels))
    y_test = enc.encode(test_labels)
    head = result.head
    proba = head.predict_proba(vec["test"], parts["test"])
    with torch.no_grad():
        # "before calibration": no temperature anywhere, members' raw probabilities mixed
        raw_logits = head(torch.from_numpy(np.asarray(vec["test"], dtype=np.float32)),
                          parts["test"] if head.uses_texts else None, member_temperatures=False).numpy()
    metrics = classification_report(proba, y_test)
    baseline = tfidf_baseline(parts["train"] + ([] if oos_label is None else parts["oos_train"]),
                              enc.encode(y_train_s), parts["test"], y_test, len(result.labels), seed=params.seed)
    report = build_report(result.labels, y_test, proba, softmax(raw_logits), history=result.history,
                          best_epoch=result.best_epoch, temperature=result.temperature, members=result.members)
    rule, scope = None, {}
    if ab is not None:
        oos_index = labels_oos_index(result.labels, oos_label)
        val_proba = softmax(result.val_logits, result.temperature)
        in_val = result.val_y != (oos_index if oos_index is not None else -1)
        disc: dict[str, Any] = {}
        if ab.oos_beta > 0 and val is not None and vec.get("oos_val") is not None:
            # the in-scope training texts' vectors; the rows of val_proba[in_val] are val's, in order
            assert int(in_val.sum()) == len(vec["val"])
            head.set_oos_score(vec["train"], k=ab.oos_k, beta=ab.oos_beta)
            disc = {k: head.oos_discount(vec[k]) for k in ("val", "oos_val", "test", "oos_test")
                    if vec.get(k) is not None}
        if vec.get("oos_val") is None:
            oos_val_proba = None
        elif oos_label is not None and val is not None:  # already in the trainer's validation set
            oos_val_proba = val_proba[~in_val]
        else:
            oos_val_proba = head.predict_proba(vec["oos_val"], parts["oos_val"])
        rule = choose_threshold(val_proba[in_val], result.val_y[in_val], oos_val_proba,
                                target_precision=ab.target_precision, oos_index=oos_index,
                                max_accuracy_loss=ab.max_accuracy_loss, in_discount=disc.get("val"),
                                oos_discount=disc.get("oos_val"))
        head.config = dataclasses.replace(head.config, abstain_threshold=rule.threshold, oos_label=oos_label)
        oos_test_proba = (head.predict_proba(vec["oos_test"], parts["oos_test"])
                          if vec.get("oos_test") is not None else None)
        scope = scope_metrics(proba, y_test, oos_test_proba, rule.threshold, oos_index,
                              in_discount=disc.get("test"), oos_discount=disc.get("oos_test"))
        report["abstain"] = {**rule.to_dict(), "test": scope, "oos_label": oos_label,
                             "oos_score": head.config.oos_score}
    return Evaluation(
        result=result,
        metrics=metrics,
        baseline=baseline,
        n_train=len(X_train),
        n_test=len(parts["test"]),
        embedder_id=embedder.model_id,
        embed_seconds=embed_seconds,
        confusion=confusion_matrix(y_test, proba.argmax(1), len(result.labels)),
        report=report,
        abstain=rule,
        scope=scope,
    )
