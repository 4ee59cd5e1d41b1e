"""Train a multi-label head and score it next to the TF-IDF one-vs-rest baseline on the same split. Pure.

The baseline is fitted on exactly the texts the head trains on and its global threshold is
chosen on the head's validation texts; both are scored once on the test texts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedclf.embedders.base import Embedder, ProgressFn
from embedclf.errors import DataError
from embedclf.training import mlmetrics
from embedclf.training.mlbaseline import tfidf_ovr
from embedclf.training.multilabel import EpochCallback, MultiLabelParams, MultiLabelResult, train_multilabel


@dataclass
class MultiLabelEvaluation:
    result: MultiLabelResult
    metrics: dict
    baseline: dict
    n_train: int
    n_val: int
    n_test: int
    embedder_id: str
    embed_seconds: float
    report: dict = field(repr=False, default_factory=dict)

    def summary(self) -> dict:
        m, b, r = self.metrics, self.baseline, self.result
        info = r.thresholds_info

        def rnd(v: object) -> object:
            return round(v, 4) if isinstance(v, float) else v

        out = {k: rnd(m[k]) for k in ("macro_f1", "micro_f1", "samples_jaccard", "macro_precision", "macro_recall",
                                      "exact_match", "cardinality_true", "cardinality_pred", "no_label_share")}
        out.update({f"baseline_tfidf_{k}": rnd(b[k]) for k in ("macro_f1", "micro_f1", "samples_jaccard",
                                                                "cardinality_pred", "threshold")})
        out.update(
            head_type="multi_label", n_train=self.n_train, n_val=self.n_val, n_test=self.n_test,
            n_labels=len(r.labels), embedder=self.embedder_id, embed_seconds=round(self.embed_seconds, 2),
            train_seconds=round(r.seconds, 2), baseline_seconds=round(b["seconds"], 2), best_epoch=r.best_epoch,
            member_weights=info["member_weights"], global_threshold=info["global_threshold"],
            fallback_labels=info["fallback_labels"], val_macro_f1=rnd(r.val_metrics["macro_f1"]),
            weakest_labels=[f"{row['label']} F1 {row['f1']:.2f} (n={row['support']})" for row in
                            sorted(m["per_label"], key=lambda row: (row["f1"], row["label"]))[:3]],
        )
        return out


def evaluate_multilabel(
    embedder: Embedder,
    train_texts: Sequence[str],
    train_sets: Sequence[Sequence[str]],
    test_texts: Sequence[str],
    test_sets: Sequence[Sequence[str]],
    params: MultiLabelParams = MultiLabelParams(),
    *,
    embed_progress: Callable[[int], ProgressFn] | None = None,
    on_epoch: EpochCallback | None = None,
    val: tuple[Sequence[str], Sequence[Sequence[str]]] | None = None,
    baseline: bool = True,
) -> MultiLabelEvaluation:
    """Embed every side once, train on ``train``, report on ``test`` next to the baseline."""
    known = {label for s in train_sets for label in s}
    for what, sets in (("test", test_sets), ("validation", val[1] if val else ())):
        unseen = sorted({label for s in sets for label in s} - known)
        if unseen:
            raise DataError(f"{len(unseen)} {what} label(s) never appear in training: "
                             + ", ".join(repr(u) for u in unseen[:5]))
    parts = {"train": list(train_texts), "test": list(test_texts)} | ({"val": list(val[0])} if val else {})
    progress = embed_progress(sum(len(v) for v in parts.values())) if embed_progress else None
    t0 = time.perf_counter()
    vec = {k: embedder.embed(v, progress) for k, v in parts.items()}
    embed_seconds = time.perf_counter() - t0

    result = train_multilabel(vec["train"], train_sets, params, on_epoch,
                              val=(vec["val"], list(val[1])) if val else None,
                              texts=parts["train"], val_texts=parts.get("val"))
    labels = result.labels
    thresholds = result.head.thresholds()
    Y_test = mlmetrics.multi_hot(test_sets, labels)
    proba = result.head.predict_proba(vec["test"], texts=parts["test"])
    metrics = mlmetrics.report(Y_test, result.head.decide(proba), labels, thresholds)

    Y_train = mlmetrics.multi_hot(train_sets, labels)
    if val is None:  # the baseline sees the head's split: fit on its training part, threshold on its validation part
        vi = result.val_index
        assert vi is not None  # set whenever the trainer split its own validation part
        fit = np.setdiff1d(np.arange(len(parts["train"])), vi)
        b_train, b_Y = [parts["train"][i] for i in fit], Y_train[fit]
        b_val, b_Yv = [parts["train"][i] for i in vi], Y_train[vi]
    else:
        b_train, b_Y, b_val, b_Yv = parts["train"], Y_train, parts["val"], result.val_Y
    base = (tfidf_ovr(b_train, b_Y, b_val, b_Yv, parts["test"], Y_test, labels) if baseline
            else _no_baseline(labels))
    report = {
        "head_type": "multi_label",
        "per_label": metrics["per_label"],
        "baseline_per_label": base["per_label"],
        "history": result.history,
        "best_epoch": result.best_epoch,
        "thresholds": result.thresholds_info,
        "members": result.members,
        "val": result.val_metrics,
    }
    return MultiLabelEvaluation(
        result=result, metrics=metrics, baseline=base, n_train=len(parts["train"]) - (0 if val else len(b_val)),
        n_val=len(b_val), n_test=len(parts["test"]), embedder_id=embedder.model_id, embed_seconds=embed_seconds,
        report=report,
    )


def _no_baseline(labels: Sequence[str]) -> dict:
    nan = float("nan")
    return {"macro_f1": nan, "micro_f1": nan, "samples_jaccard": nan, "cardinality_pred": nan, "threshold": nan,
            "seconds": 0.0, "per_label": [{"label": label, "f1": nan} for label in labels]}
