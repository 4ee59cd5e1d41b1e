"""``bench mlheads``: compare multi-label head variants on training-side data only.

Either train on a training file and score on a development file (GoEmotions ships ``dev``), or
k-fold cross-validation on the training file. Every variant sees exactly the same texts, so the
comparison is paired. A separate test file is never read: this is how the multi-label defaults
are chosen without tuning on test.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from embedclf.errors import BenchError
from embedclf.training import mlmetrics
from embedclf.training.multilabel import MultiLabelParams, train_multilabel

#: name -> MultiLabelParams overrides on top of the defaults ("default": the defaults themselves);
#: every other variant says whether it has the sparse (TF-IDF) member and its min_labels rule, so its meaning
#: does not move with the defaults (the variants before the decision rules existed decide with min_labels 0)
ML_VARIANTS: dict[str, dict] = {
    "default": {},
    "dense": {"sparse_member": False, "min_labels": 0},
    "dense-unweighted": {"sparse_member": False, "pos_weight_power": 0.0, "min_labels": 0},
    "dense-global-threshold": {"sparse_member": False, "min_positives": 10**9, "min_labels": 0},
    "mlp-only": {"sparse_member": False, "linear_member": False, "min_labels": 0},
    "linear-only": {"sparse_member": False, "num_layers": 1, "min_labels": 0},
    "sparse": {"sparse_member": True, "min_labels": 0},
    "sparse-average": {"sparse_member": True, "combine": "average", "min_labels": 0},
    "sparse-unweighted": {"sparse_member": True, "pos_weight_power": 0.0, "min_labels": 0},
    "sparse-weight-1.0": {"sparse_member": True, "pos_weight_power": 1.0, "min_labels": 0},
    "sparse-global-threshold": {"sparse_member": True, "min_positives": 10**9, "min_labels": 0},
    "sparse-min-pos-5": {"sparse_member": True, "min_positives": 5, "min_labels": 0},
    "sparse-min-pos-25": {"sparse_member": True, "min_positives": 25, "min_labels": 0},
    "sparse-50k": {"sparse_member": True, "sparse_max_features": 50_000, "min_labels": 0},
    # decision rules on the same trained head (they share its training): at least the top label,
    # at most k labels per text
    "sparse-top1": {"sparse_member": True, "min_labels": 1},
    "sparse-max3": {"sparse_member": True, "max_labels": 3, "min_labels": 0},
    "sparse-max2": {"sparse_member": True, "max_labels": 2, "min_labels": 0},
    "sparse-top1-max3": {"sparse_member": True, "min_labels": 1, "max_labels": 3},
    "sparse-top1-max2": {"sparse_member": True, "min_labels": 1, "max_labels": 2},
    # the TF-IDF member's vocabulary cap per analyzer (20k by default) and its liblinear C (0.3; 10 until the CV in
    # docs/multilabel.md, "The sparse member's C", chose 0.3: "sparse-top1-c10" is the previous default), with the
    # default rule
    "sparse-top1-50k": {"sparse_member": True, "sparse_max_features": 50_000, "min_labels": 1},
    "sparse-top1-100k": {"sparse_member": True, "sparse_max_features": 100_000, "min_labels": 1},
    "sparse-top1-c3": {"sparse_member": True, "sparse_c": 3.0, "min_labels": 1},
    "sparse-top1-c30": {"sparse_member": True, "sparse_c": 30.0, "min_labels": 1},
    "sparse-top1-c10": {"sparse_member": True, "sparse_c": 10.0, "min_labels": 1},
    "sparse-top1-c1": {"sparse_member": True, "sparse_c": 1.0, "min_labels": 1},
    "sparse-top1-50k-c3": {"sparse_member": True, "sparse_max_features": 50_000, "sparse_c": 3.0, "min_labels": 1},
    "sparse-top1-100k-c3": {"sparse_member": True, "sparse_max_features": 100_000, "sparse_c": 3.0, "min_labels": 1},
    "sparse-top1-100k-c1": {"sparse_member": True, "sparse_max_features": 100_000, "sparse_c": 1.0, "min_labels": 1},
    "sparse-top1-c.3": {"sparse_member": True, "sparse_c": 0.3, "min_labels": 1},
    "sparse-top1-100k-c.3": {"sparse_member": True, "sparse_max_features": 100_000, "sparse_c": 0.3, "min_labels": 1},
    "sparse-top1-200k-c1": {"sparse_member": True, "sparse_max_features": 200_000, "sparse_c": 1.0, "min_labels": 1},
}
#: parameters that only change the decision rule: variants differing only in these share one training
_RULE_FIELDS = ("min_labels", "max_labels")

FoldCallback = Callable[[dict], None]


def parse_ml_variants(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in names if v not in ML_VARIANTS]
    if unknown or not names or len(set(names)) != len(names):
        raise BenchError(f"bad multi-label variant list {value!r}; choose distinct names from {', '.join(ML_VARIANTS)}")
    return names


def _score(r: Any, X: np.ndarray, Xh: np.ndarray, held_sets: Sequence[Sequence[str]], held_texts: list[str],
           seconds: float) -> dict:
    known = set(r.labels)
    Y = mlmetrics.multi_hot([[label for label in s if label in known] for s in held_sets], r.labels)
    P = r.head.decide(r.head.predict_proba(Xh, texts=held_texts))
    return {"macro_f1": mlmetrics.macro_f1(Y, P), "micro_f1": mlmetrics.micro_f1(Y, P),
            "samples_jaccard": mlmetrics.samples_jaccard(Y, P), "cardinality": float(P.sum(1).mean()),
            "seconds": seconds, "member_weights": list(r.head.config.member_weights), "best_epoch": r.best_epoch}


def _with_rule(r: Any, params: MultiLabelParams) -> Any:
    """The trained result ``r`` deciding with ``params``' min/max-labels rule (the head is shared, its config not)."""
    head = copy.copy(r.head)  # a shallow copy: same weights, its own config
    head.config = replace(r.head.config, min_labels=params.min_labels, max_labels=params.max_labels)
    return replace(r, head=head, params=params)


def compare(X: np.ndarray, sets: Sequence[Sequence[str]], texts: Sequence[str], variants: Sequence[str], *,
            dev: tuple[np.ndarray, Sequence[Sequence[str]], Sequence[str]] | None = None, folds: int = 3,
            seed: int = 123,
            base: MultiLabelParams = MultiLabelParams(), on_fold: FoldCallback | None = None) -> dict:
    """Macro-F1 (and more) of each variant on ``dev`` (embeddings, label sets, texts) or on ``folds`` folds."""
    X = np.asarray(X, dtype=np.float32)
    splits: list[tuple[np.ndarray, np.ndarray | None]]
    if dev is not None:
        splits = [(np.arange(len(X)), None)]
    else:
        if folds < 2:
            raise BenchError("cross-validation needs >= 2 folds")
        perm = np.random.default_rng(seed).permutation(len(X))
        splits = [(np.sort(np.setdiff1d(perm, part)), np.sort(part)) for part in np.array_split(perm, folds)]
    per: dict[str, list[dict]] = {v: [] for v in variants}
    for fold, (tr, te) in enumerate(splits):
        if te is None:
            assert dev is not None  # the one split without a held-out part is the dev mode
            Xh, held, held_texts = dev[0], list(dev[1]), list(dev[2])
        else:
            Xh, held, held_texts = X[te], [sets[i] for i in te], [texts[i] for i in te]
        groups: dict[MultiLabelParams, list[str]] = {}
        for name in variants:
            params = replace(base, **ML_VARIANTS[name])
            groups.setdefault(replace(params, **{f: getattr(MultiLabelParams(), f) for f in _RULE_FIELDS}),
                              []).append(name)
        for trained_params, names in groups.items():
            start = time.perf_counter()
            trained = train_multilabel(X[tr], [sets[i] for i in tr], trained_params, texts=[texts[i] for i in tr])
            seconds = (time.perf_counter() - start) / len(names)
            for name in names:
                res = _score(_with_rule(trained, replace(base, **ML_VARIANTS[name])), X, Xh, held, held_texts,
                             seconds)
                per[name].append(res)
                if on_fold is not None:
                    on_fold({"fold": fold, "variant": name, **res})
    ref = np.asarray([r["macro_f1"] for r in per[variants[0]]])
    out: dict[str, Any] = {"mode": "dev" if dev is not None else f"{folds}-fold", "n": len(X),
           "n_held": len(dev[0]) if dev else None, "reference": variants[0], "variants": {}}
    for name in variants:
        f = np.asarray([r["macro_f1"] for r in per[name]])
        diff = f - ref
        n = len(f)
        out["variants"][name] = {
            "overrides": ML_VARIANTS[name],
            "macro_f1": round(float(f.mean()), 4),
            "fold_macro_f1": [round(v, 4) for v in f],
            "micro_f1": round(float(np.mean([r["micro_f1"] for r in per[name]])), 4),
            "samples_jaccard": round(float(np.mean([r["samples_jaccard"] for r in per[name]])), 4),
            "cardinality": round(float(np.mean([r["cardinality"] for r in per[name]])), 3),
            "mean_diff": round(float(diff.mean()), 4),
            "diff_se": round(float(diff.std(ddof=1) / math.sqrt(n)), 4) if n > 1 else None,
            "train_seconds": round(float(np.mean([r["seconds"] for r in per[name]])), 1),
            "member_weights": per[name][-1]["member_weights"],
        }
    return out


def ml_report(r: dict, echo) -> None:
    echo(f"\n{r['n']} training texts, {r['mode']}" + (f" ({r['n_held']} dev texts)" if r.get("n_held") else "")
         + f", embedder {r.get('embedder')}; no test data read")
    echo(f"  {'variant':<18}{'macro-F1':>9}  {'vs ' + r['reference']:>18}{'micro-F1':>10}{'Jaccard':>9}"
         f"{'labels/text':>12}{'train s':>9}  weights")
    for name, v in r["variants"].items():
        se = f" ± {v['diff_se'] * 100:.2f}" if v["diff_se"] is not None else ""
        echo(f"  {name:<18}{v['macro_f1']:>9.4f}  {v['mean_diff'] * 100:>+10.2f}{se:<8}{v['micro_f1']:>10.4f}"
             f"{v['samples_jaccard']:>9.4f}{v['cardinality']:>12.3f}{v['train_seconds']:>9.1f}  {v['member_weights']}")
