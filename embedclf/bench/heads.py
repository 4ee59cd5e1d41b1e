"""``bench heads``: compare head variants by k-fold cross-validation on one labelled file.

Every variant is trained on the same k-1 folds and scored on the held-out fold, for each
of the k folds, so the comparison is paired: per-fold differences to the first variant
cancel most of the noise that one split carries. Nothing here looks at a separate test
file: this is how a head recipe is chosen without tuning on the test set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from embedclf.errors import BenchError
from embedclf.training.finish import finish_head
from embedclf.training.trainer import TrainParams, train_dense, train_head

_DENSE = {"tfidf_member": False}
_HYBRID = {"tfidf_member": True, "member_weights": "equal"}
_DEFAULT = {"linear_member": True, **_HYBRID}
#: name -> TrainParams overrides on top of the defaults; "+tfidf" variants add the TF-IDF member
#: (equal member weights; "-fit": weights chosen on the validation split; "-w…": fixed weights
#: mlp/linear/tfidf; "-refit": linear + TF-IDF members refitted on training + validation texts;
#: "-a…": the TF-IDF member's L2 strength; "-100k"/"-50k"/"-10k"/"-5k": its vocabulary cap per analyzer (20k);
#: "-e60"/"-e30"/"-e20": 60/30/20 MLP epochs (60 was the default until the CV in docs/training.md chose 30);
#: "-h256": 256 hidden units instead of 512;
#: "-l2": one hidden layer (two Linear layers) instead of two; "-te10"/"-te5": the TF-IDF member's SGD
#: passes (20 by default); "-b128"/"-b256": MLP mini-batches of 128 (lr 2e-3) / 256 (lr 3e-3) instead of 64 (1e-3));
#: "-ls.2": label smoothing 0.2 (0.1); "-d.5"/"-d.3"/"-d.2"/"-d.1": dropout 0.5/0.3/0.2/0.1 (0.5 was the
#: default until the CV in docs/training.md chose 0.3); "-wd.05": weight decay 0.05 (0.01); "-h1024": 1,024 hidden
#: units (512); "-knn": a kNN member (k 10, temp 0.05) with 0.3 of the mix ("-knn.2"/"-knn.4": 0.2/0.4;
#: "-knn-k20"/"-knn-k5": 20/5 neighbours; "-knn-t.1"/"-knn-t.03"/"-knn-t.02": temp 0.1/0.03/0.02; "-knn-fit": all
#: weights fitted on validation; "-knn-auto": the member kept only when it lowers the validation NLL);
#: "-c3"/"-c10"/"-c30"/"-c100": the linear member's C (the default was 10 until the CV in docs/training.md chose
#: 30, so every variant without "-c…" now has C 30); "-mlp": the MLP retrained on training + validation rows
VARIANTS: dict[str, dict] = {
    "mlp": {"linear_member": False, **_DENSE},
    "mlp+linear": {"linear_member": True, **_DENSE},
    "linear": {"num_layers": 1, **_DENSE},
    "mlp+linear+tfidf": _DEFAULT,
    "mlp+linear+tfidf-fit": {**_DEFAULT, "member_weights": "fit"},
    "mlp+linear+tfidf-w.25.25.5": {**_DEFAULT, "member_weights": "0.25/0.25/0.5"},
    "mlp+linear+tfidf-w.4.2.4": {**_DEFAULT, "member_weights": "0.4/0.2/0.4"},
    "mlp+linear+tfidf-refit": {**_DEFAULT, "refit": True},
    "mlp+linear+tfidf-a3e-6": {**_DEFAULT, "tfidf_alpha": 3e-6},
    "mlp+linear+tfidf-a3e-5": {**_DEFAULT, "tfidf_alpha": 3e-5},
    "mlp+linear+tfidf-10k": {**_DEFAULT, "tfidf_max_features": 10_000},
    "mlp+linear+tfidf-5k": {**_DEFAULT, "tfidf_max_features": 5_000},
    "mlp+linear+tfidf-e30": {**_DEFAULT, "epochs": 30},
    "mlp+linear+tfidf-e60-refit": {**_DEFAULT, "epochs": 60, "refit": True},
    "mlp+linear+tfidf-e30-refit": {**_DEFAULT, "epochs": 30, "refit": True},
    "mlp+linear+tfidf-e20-refit": {**_DEFAULT, "epochs": 20, "refit": True},
    "mlp+linear+tfidf-h256-e30-refit": {**_DEFAULT, "hidden_dim": 256, "epochs": 30, "refit": True},
    "mlp+linear+tfidf-l2-e30-refit": {**_DEFAULT, "num_layers": 2, "epochs": 30, "refit": True},
    "mlp+linear+tfidf-l2-h256-e30-refit": {**_DEFAULT, "num_layers": 2, "hidden_dim": 256, "epochs": 30,
                                           "refit": True},
    "linear+tfidf-refit": {"num_layers": 1, **_HYBRID, "refit": True},
    "mlp+linear+tfidf-te10-refit": {**_DEFAULT, "tfidf_epochs": 10, "refit": True},
    "mlp+linear+tfidf-te5-refit": {**_DEFAULT, "tfidf_epochs": 5, "refit": True},
    "mlp+linear+tfidf-b128-refit": {**_DEFAULT, "batch_size": 128, "lr": 2e-3, "refit": True},
    "mlp+linear+tfidf-b256-refit": {**_DEFAULT, "batch_size": 256, "lr": 3e-3, "refit": True},
    "mlp+linear+tfidf-b256-te5-refit": {**_DEFAULT, "batch_size": 256, "lr": 3e-3, "tfidf_epochs": 5, "refit": True},
    "mlp+linear+tfidf-ls.2-refit": {**_DEFAULT, "label_smoothing": 0.2, "refit": True},
    "mlp+linear+tfidf-d.3-refit": {**_DEFAULT, "dropout": 0.3, "refit": True},
    "mlp+linear+tfidf-d.5-refit": {**_DEFAULT, "dropout": 0.5, "refit": True},
    "mlp+linear+tfidf-d.2-refit": {**_DEFAULT, "dropout": 0.2, "refit": True},
    "mlp+linear+tfidf-d.1-refit": {**_DEFAULT, "dropout": 0.1, "refit": True},
    "mlp+linear+tfidf-d.3-h1024-refit": {**_DEFAULT, "dropout": 0.3, "hidden_dim": 1024, "refit": True},
    "mlp+linear+tfidf-d.3-ls.2-refit": {**_DEFAULT, "dropout": 0.3, "label_smoothing": 0.2, "refit": True},
    "mlp+linear+tfidf-wd.05-refit": {**_DEFAULT, "weight_decay": 0.05, "refit": True},
    "mlp+linear+tfidf-h1024-refit": {**_DEFAULT, "hidden_dim": 1024, "refit": True},
    "mlp+linear+tfidf-a1e-4-refit": {**_DEFAULT, "tfidf_alpha": 1e-4, "refit": True},
    "mlp+linear+tfidf-a3e-4-refit": {**_DEFAULT, "tfidf_alpha": 3e-4, "refit": True},
    "mlp+linear+tfidf-a3e-5-refit": {**_DEFAULT, "tfidf_alpha": 3e-5, "refit": True},
    "mlp+linear+tfidf-50k-refit": {**_DEFAULT, "tfidf_max_features": 50_000, "refit": True},
    "mlp+linear+tfidf-100k-refit": {**_DEFAULT, "tfidf_max_features": 100_000, "refit": True},
    "mlp+linear+tfidf-50k-a3e-6-refit": {**_DEFAULT, "tfidf_max_features": 50_000, "tfidf_alpha": 3e-6,
                                         "refit": True},
    "mlp+linear+tfidf-50k-a3e-5-refit": {**_DEFAULT, "tfidf_max_features": 50_000, "tfidf_alpha": 3e-5,
                                         "refit": True},
    "mlp+linear+tfidf-refit-knn": {**_DEFAULT, "refit": True, "knn_member": "on"},
    "mlp+linear+tfidf-refit-knn.2": {**_DEFAULT, "refit": True, "knn_member": "on", "knn_weight": 0.2},
    "mlp+linear+tfidf-refit-knn.4": {**_DEFAULT, "refit": True, "knn_member": "on", "knn_weight": 0.4},
    "mlp+linear+tfidf-refit-knn-k20": {**_DEFAULT, "refit": True, "knn_member": "on", "knn_k": 20},
    "mlp+linear+tfidf-refit-knn-t.1": {**_DEFAULT, "refit": True, "knn_member": "on", "knn_temp": 0.1},
    "mlp+linear+tfidf-refit-knn-t.03": {**_DEFAULT, "refit": True, "knn_member": "on", "knn_temp": 0.03},
    "mlp+linear+tfidf-refit-knn-t.02": {**_DEFAULT, "refit": True, "knn_member": "on", "knn_temp": 0.02},
    "mlp+linear+tfidf-refit-knn-k5": {**_DEFAULT, "refit": True, "knn_member": "on", "knn_k": 5},
    "mlp+linear+tfidf-refit-knn-k5-t.03": {**_DEFAULT, "refit": True, "knn_member": "on", "knn_k": 5,
                                           "knn_temp": 0.03},
    "mlp+linear+tfidf-refit-knn-auto": {**_DEFAULT, "refit": True, "knn_member": "auto"},
    "mlp+linear+tfidf-refit-knn-auto-c3": {**_DEFAULT, "refit": True, "knn_member": "auto", "linear_c": 3.0},
    "mlp+linear+tfidf-refit-knn-auto-c10": {**_DEFAULT, "refit": True, "knn_member": "auto", "linear_c": 10.0},
    "mlp+linear+tfidf-refit-knn-auto-c30": {**_DEFAULT, "refit": True, "knn_member": "auto", "linear_c": 30.0},
    "mlp+linear+tfidf-refit-knn-auto-c100": {**_DEFAULT, "refit": True, "knn_member": "auto", "linear_c": 100.0},
    "mlp+linear+tfidf-refit-knn-auto-mlp": {**_DEFAULT, "refit": True, "refit_mlp": True, "knn_member": "auto"},
    "mlp+linear+tfidf-refit-knn-fit": {**_DEFAULT, "refit": True, "knn_member": "on", "member_weights": "fit"},
    "mlp+linear+knn-refit": {"linear_member": True, **_DENSE, "refit": True, "knn_member": "on"},
    "mlp+tfidf": {"linear_member": False, **_HYBRID},
    "linear+tfidf": {"num_layers": 1, **_HYBRID},
    "linear+tfidf-fit": {"num_layers": 1, **_HYBRID, "member_weights": "fit"},
}
#: the parameters only the second training stage (``finish_head``) reads: variants differing only in
#: these share one dense training per fold
_FINISH_FIELDS = ("tfidf_member", "tfidf_max_features", "tfidf_alpha", "tfidf_epochs", "member_weights", "refit",
                  "refit_mlp", "knn_member", "knn_k", "knn_temp", "knn_weight")

FoldCallback = Callable[[dict], None]


def parse_variants(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise BenchError(f"unknown head variant(s) {unknown or value!r}; choose from {', '.join(VARIANTS)}")
    if len(set(names)) != len(names):
        raise BenchError(f"a variant is listed twice: {value!r}")
    return names


def check_folds(labels: Sequence[str], folds: int) -> None:
    """Stratified k folds need every label at least k times."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    smallest = int(counts.min()) if len(counts) else 0
    if folds < 2 or len(counts) < 2 or smallest < folds:
        raise BenchError(f"{folds}-fold cross-validation needs >= 2 folds, >= 2 labels and every label at least "
                         f"{folds} times (the rarest has {smallest})")


def cross_validate(X: np.ndarray, labels: Sequence[str], variants: Sequence[str], folds: int = 5,
                   base: TrainParams = TrainParams(), seed: int = 123,
                   on_fold: FoldCallback | None = None, texts: Sequence[str] | None = None,
                   share: bool = True) -> dict:
    """Accuracy of each variant on each held-out fold, means, and paired differences to ``variants[0]``.

    ``texts`` (one per row of ``X``) are needed by the ``+tfidf`` variants. With ``share``, variants
    that differ only in the second training stage (TF-IDF member, mixing weights, refit: e.g.
    ``mlp+linear``, ``mlp+linear+tfidf``, ``mlp+linear+tfidf-fit``) share one dense training per fold
    (:func:`~embedclf.training.trainer.train_dense`), each finished its own way by
    :func:`~embedclf.training.finish.finish_head`: exactly what ``train_head`` computes for it alone.
    The training time shown is the shared time divided among them plus the variant's own finish.
    """
    from sklearn.model_selection import StratifiedKFold

    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(labels)
    if len(X) != len(y):
        raise BenchError("one label per row")
    check_folds(labels, folds)
    if texts is not None and len(texts) != len(X):
        raise ValueError("one text per row")
    needs_texts = [v for v in variants if VARIANTS[v].get("tfidf_member")]
    if needs_texts and texts is None:
        raise ValueError(f"variant(s) {', '.join(needs_texts)} need the texts")
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    acc: dict[str, list[float]] = {v: [] for v in variants}
    seconds: dict[str, float] = {v: 0.0 for v in variants}
    groups = _share_groups(variants, base) if share else [[v] for v in variants]
    for fold, (tr, te) in enumerate(splitter.split(X, y)):
        tr_texts = [texts[i] for i in tr] if texts is not None else None
        te_texts = [texts[i] for i in te] if texts is not None else None
        for group in groups:
            start = time.perf_counter()
            heads: dict[str, Any] = {}
            if len(group) == 1:
                result = train_head(X[tr], list(y[tr]), replace(base, **VARIANTS[group[0]]), texts=tr_texts)
                heads[group[0]] = (result, time.perf_counter() - start)
            else:
                stage = train_dense(X[tr], list(y[tr]), _dense_params(base, group[0]), texts=tr_texts)
                shared = (time.perf_counter() - start) / len(group)
                memo: dict = {}
                for name in group:
                    t0 = time.perf_counter()
                    result = finish_head(stage, replace(base, **VARIANTS[name]), memo)
                    heads[name] = (result, shared + time.perf_counter() - t0)
            for name in group:
                result, spent = heads[name]
                pred = np.asarray(result.labels)[result.head.predict_proba(X[te], te_texts).argmax(1)]
                acc[name].append(float((pred == y[te]).mean()))
                seconds[name] += spent
                if on_fold is not None:
                    on_fold({"fold": fold, "variant": name, "accuracy": acc[name][-1]})
    ref = np.asarray(acc[variants[0]])
    out: dict[str, Any] = {"folds": folds, "n": len(X), "n_labels": int(len(np.unique(y))),
                           "reference": variants[0], "variants": {}}
    for name in variants:
        a = np.asarray(acc[name])
        diff = a - ref
        se = float(diff.std(ddof=1) / math.sqrt(folds)) if folds > 1 else float("nan")
        out["variants"][name] = {
            "fold_accuracy": [round(v, 4) for v in a],
            "mean_accuracy": round(float(a.mean()), 4),
            "mean_diff": round(float(diff.mean()), 4),
            "diff_se": round(se, 4),
            "folds_not_worse": int((diff >= 0).sum()),
            "train_seconds_per_fold": round(seconds[name] / folds, 3),
        }
    return out


def _dense_params(base: TrainParams, name: str) -> TrainParams:
    """The variant's parameters with every second-stage field at its default: its dense recipe."""
    defaults = TrainParams()
    return replace(base, **{**VARIANTS[name], **{f: getattr(defaults, f) for f in _FINISH_FIELDS}})


def _share_groups(variants: Sequence[str], base: TrainParams) -> list[list[str]]:
    """Variants grouped by their dense recipe (everything but the second-stage fields)."""
    by_dense: dict[TrainParams, list[str]] = {}
    for name in variants:
        by_dense.setdefault(_dense_params(base, name), []).append(name)
    return list(by_dense.values())


def heads_report(r: dict, echo) -> None:
    """Print a ``bench heads`` report."""
    from embedclf.bench.report import machine_block

    machine_block(r["machine"], echo)
    echo(f"\n{r['n']} texts, {r['n_labels']} labels, embedder {r['embedder']}, {r['folds']}-fold "
         f"stratified cross-validation (paired: every variant sees the same folds)")
    echo(f"  {'variant':<22}{'mean acc.':>10}  {'vs ' + r['reference']:>22}  {'folds >=':>8}  "
         f"{'train s/fold':>12}  per fold")
    for name, v in r["variants"].items():
        diff = f"{v['mean_diff'] * 100:+.2f} ± {v['diff_se'] * 100:.2f} pt"
        folds = " ".join(f"{a:.4f}" for a in v["fold_accuracy"])
        echo(f"  {name:<22}{v['mean_accuracy']:>10.4f}  {diff:>22}  {v['folds_not_worse']:>5}/{r['folds']}  "
             f"{v['train_seconds_per_fold']:>12.1f}  {folds}")
