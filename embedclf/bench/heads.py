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
from embedclf.training.trainer import TrainParams, train_head

_DENSE = {"tfidf_member": False}
_HYBRID = {"tfidf_member": True, "member_weights": "equal"}
#: name -> TrainParams overrides on top of the defaults; "+tfidf" variants add the TF-IDF member
#: (equal member weights; "-fit": weights chosen on the validation split)
VARIANTS: dict[str, dict] = {
    "mlp": {"linear_member": False, **_DENSE},
    "mlp+linear": {"linear_member": True, **_DENSE},
    "linear": {"num_layers": 1, **_DENSE},
    "mlp+linear+tfidf": {"linear_member": True, **_HYBRID},
    "mlp+linear+tfidf-fit": {"linear_member": True, **_HYBRID, "member_weights": "fit"},
    "mlp+tfidf": {"linear_member": False, **_HYBRID},
    "linear+tfidf": {"num_layers": 1, **_HYBRID},
    "linear+tfidf-fit": {"num_layers": 1, **_HYBRID, "member_weights": "fit"},
}

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
    that differ only in the TF-IDF member and the mixing weights (e.g. ``mlp+linear``,
    ``mlp+linear+tfidf``, ``mlp+linear+tfidf-fit``) share one training per fold: the dense members
    train exactly as they would alone (the sparse member draws no random numbers and trains after
    them), so each variant's predictions are its own members mixed its own way; the training time
    shown is the shared time divided among them.
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
            if len(group) == 1:
                result = train_head(X[tr], list(y[tr]), replace(base, **VARIANTS[group[0]]), texts=tr_texts)
                preds = {group[0]: result.head.predict_proba(X[te], te_texts).argmax(1)}
            else:
                params = replace(base, **{**VARIANTS[group[0]], "tfidf_member": True, "member_weights": "fit"})
                result = train_head(X[tr], list(y[tr]), params, texts=tr_texts)
                assert te_texts is not None  # the shared training has a TF-IDF member, so texts were given
                preds = _shared_predictions(result.head, X[te], te_texts, group)
            spent = (time.perf_counter() - start) / len(group)
            for name in group:
                pred = np.asarray(result.labels)[preds[name]]
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


def _share_groups(variants: Sequence[str], base: TrainParams) -> list[list[str]]:
    """Variants grouped by their dense recipe; a group shares one training when it holds a ``+tfidf`` variant."""
    by_dense: dict[TrainParams, list[str]] = {}
    for name in variants:
        dense = replace(base, **{**VARIANTS[name], "tfidf_member": False, "member_weights": "equal"})
        by_dense.setdefault(dense, []).append(name)
    groups: list[list[str]] = []
    for members in by_dense.values():
        if len(members) > 1 and any(VARIANTS[v].get("tfidf_member") for v in members):
            groups.append(members)
        else:
            groups.extend([v] for v in members)
    return groups


def _shared_predictions(head, X: np.ndarray, texts: Sequence[str], group: Sequence[str]) -> dict[str, np.ndarray]:
    """Argmax per variant of one trained hybrid head: dense members only, equal or fitted weights."""
    import torch

    with torch.no_grad():
        zs = head.member_logits(torch.from_numpy(np.asarray(X, dtype=np.float32)), texts)
        logp = torch.stack([torch.log_softmax(z / t, dim=-1) for z, t in zip(zs, head.member_temperature)])
    k = len(zs)
    out = {}
    for name in group:
        v = VARIANTS[name]
        if not v.get("tfidf_member"):
            w = torch.tensor([1.0] * (k - 1) + [0.0]) / (k - 1)  # the dense members, averaged
        elif v.get("member_weights") == "fit":
            w = head.member_weight
        else:
            w = torch.full((k,), 1.0 / k)
        out[name] = torch.logsumexp(logp + torch.log(w)[:, None, None], dim=0).argmax(1).numpy()
    return out


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
