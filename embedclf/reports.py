"""PNG plots people would rather look at than read: training curve, confusion matrix, reliability diagram.

Each ``plot_*`` function writes one PNG (matplotlib's Agg backend, chosen when the
first plot is drawn, never at import). The ``*_figure`` functions build the figure
without saving it, so tests can read what it says. The pure helpers
(:func:`kept_epoch_note`, :func:`merge_sparse_bins`) hold the decisions.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: reliability points need this many texts; sparser neighbouring bins are merged
MIN_BIN_TEXTS = 10
#: a confusion matrix with more labels shows the most-confused ones only
MAX_CONFUSION_LABELS = 30


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    fig.savefig(out, dpi=110)
    _plt().close(fig)
    return out


#: title characters per inch of figure width (10-11 pt): longer titles (e.g. two file paths) wrap instead of
#: running off the figure
TITLE_CHARS_PER_INCH = 10.5


def _titled(title: str | None, what: str, inches: float) -> str:
    text = f"{title}: {what}" if title else what
    width = int(inches * TITLE_CHARS_PER_INCH)
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in text.splitlines())


# --- training curve --------------------------------------------------------------------------


def best_by_accuracy(history: Sequence[dict]) -> int:
    """The epoch the trainer keeps when it chooses: highest validation accuracy, ties to the lower validation
    loss, the earliest of equals (``training/trainer.py``: key ``(val_accuracy, -val_loss)``, strictly better)."""
    best = max(history, key=lambda h: (h["val_accuracy"], -h["val_loss"], -h["epoch"]))
    return int(best["epoch"])


def kept_epoch_note(history: Sequence[dict], best_epoch: int) -> str:
    """Why ``best_epoch``'s weights were kept, in words, by the rule the trainer used."""
    if not history or best_epoch <= 0:
        return ""
    if best_epoch == best_by_accuracy(history):
        return (f"kept weights: epoch {best_epoch}, the highest validation accuracy (ties: the lower validation "
                "loss); early stopping watches the same score")
    if best_epoch == history[-1]["epoch"]:
        return (f"kept weights: the last epoch ({best_epoch}); the validation slice is too small (< 100 texts) "
                "to choose an epoch, so the end of the annealed learning-rate schedule is kept")
    return f"kept weights: epoch {best_epoch} (as chosen by the trainer)"


def training_figure(history: Sequence[dict], best_epoch: int, title: str | None = None,
                    what: str = "training curve") -> Figure:
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    acc = [h["val_accuracy"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train loss (label smoothing + dropout)")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax2.plot(epochs, acc, color="tab:green", label="validation accuracy")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    note = kept_epoch_note(history, best_epoch)
    if note:
        kept = next(h for h in history if h["epoch"] == best_epoch)
        for ax in (ax1, ax2):
            ax.axvline(best_epoch, color="black", linestyle="--", linewidth=1,
                       label=f"kept: epoch {best_epoch} (validation accuracy {kept['val_accuracy']:.3f})")
        ax2.plot([best_epoch], [kept["val_accuracy"]], "o", color="black", zorder=3)
        peak = best_by_accuracy(history)
        if peak != best_epoch:
            ax2.plot([peak], [acc[epochs.index(peak)]], "v", color="tab:red", zorder=3,
                     label=f"peak validation accuracy (epoch {peak}), not used")
        fig.text(0.5, 0.015, note, ha="center", va="bottom", fontsize=8.5, wrap=True)
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle(_titled(title, what, 11), fontsize=11)
    fig.tight_layout(rect=(0, 0.06 if note else 0, 1, 1))
    return fig


def plot_training_curve(history: Sequence[dict], best_epoch: int, path: str | Path, title: str | None = None,
                        what: str = "training curve") -> Path:
    return _save(training_figure(history, best_epoch, title, what), path)


# --- confusion matrix ------------------------------------------------------------------------


def confusion_figure(cm: np.ndarray, labels: Sequence[str], max_labels: int = MAX_CONFUSION_LABELS,
                     title: str | None = None) -> Figure:
    """Row-normalised colours, the count in every non-zero cell; past ``max_labels``, the most-confused labels."""
    plt = _plt()
    cm = np.asarray(cm)
    idx = np.arange(len(labels))
    if len(labels) > max_labels:
        off = cm.copy()
        np.fill_diagonal(off, 0)
        score = off.sum(0) + off.sum(1)
        idx = np.sort(np.argsort(-score, kind="stable")[:max_labels])
    sub = cm[np.ix_(idx, idx)]
    support = cm[idx].sum(1)
    shown = [labels[int(i)] for i in idx]
    columns = list(shown)
    partial = len(idx) < len(labels)
    if partial:  # texts predicted as a label not shown: one more column, so every row adds up to its texts
        sub = np.concatenate([sub, (support - sub.sum(1))[:, None]], axis=1)
        columns.append("(any label not shown)")
    norm = sub / np.maximum(support[:, None], 1)
    n = len(idx)
    size = 3.5 + 0.36 * n
    fig, ax = plt.subplots(figsize=(size + 2.0, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if partial:
        ax.axvline(n - 0.5, color="grey", linewidth=1.5)
    fontsize = float(np.clip(240 / max(n, 1), 6, 11))
    for i, j in zip(*np.nonzero(sub)):
        ax.text(j, i, str(int(sub[i, j])), ha="center", va="center", fontsize=fontsize,
                color="white" if norm[i, j] > 0.55 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
    ax.set_yticks(range(n), [f"{name} ({count})" for name, count in zip(shown, support)], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true label (its test texts)")
    what = "confusion matrix\ntexts per cell, colour: share of the true class"
    if partial:
        what += f"; the {n} most-confused of {len(labels)} labels"
    ax.set_title(_titled(title, what, size + 2.0), fontsize=11)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    return fig


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, max_labels: int = MAX_CONFUSION_LABELS,
                   title: str | None = None) -> Path:
    return _save(confusion_figure(cm, labels, max_labels, title), path)


# --- reliability diagram ---------------------------------------------------------------------


def merge_sparse_bins(bins: Sequence[dict], min_count: int = MIN_BIN_TEXTS) -> list[dict]:
    """Neighbouring bins joined until each holds ``min_count`` texts (a short tail joins the last group).

    Mean confidence and accuracy are count-weighted, so a merged point is exactly the
    bin its texts would have formed; empty bins disappear.
    """
    groups: list[list[dict]] = []
    current: list[dict] = []
    for b in bins:
        if not b["count"]:
            continue
        current.append(b)
        if sum(x["count"] for x in current) >= min_count:
            groups.append(current)
            current = []
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    merged = []
    for g in groups:
        n = sum(b["count"] for b in g)
        merged.append({
            "lo": g[0]["lo"], "hi": g[-1]["hi"], "count": n, "bins": len(g),
            "confidence": sum(b["confidence"] * b["count"] for b in g) / n,
            "accuracy": sum(b["accuracy"] * b["count"] for b in g) / n,
        })
    return merged


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % (Wilson score) interval of an accuracy measured on ``n`` texts: how far a point may wander
    by chance alone."""
    if n <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _same_bins(a: Sequence[dict], b: Sequence[dict], tol: float = 1e-4) -> bool:
    """Whether two sets of bins would draw the same curve (float32 and float64 paths differ in the 7th digit)."""
    if [x["count"] for x in a] != [x["count"] for x in b]:
        return False
    return all(abs((x[k] or 0.0) - (y[k] or 0.0)) <= tol for x, y in zip(a, b) for k in ("confidence", "accuracy"))


def reliability_figure(bins: Sequence[dict], *, uncalibrated: Sequence[dict] | None = None, ece: float | None = None,
                       ece_uncalibrated: float | None = None, temperature: float | None = None,
                       title: str | None = None, min_count: int = MIN_BIN_TEXTS) -> Figure:
    plt = _plt()
    fig, (ax, axn) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    unchanged = uncalibrated is not None and _same_bins(bins, uncalibrated)
    series = [("after temperature scaling", bins, ece, "tab:blue")]
    if uncalibrated is not None and not unchanged:
        series.insert(0, ("before temperature scaling", uncalibrated, ece_uncalibrated, "tab:orange"))
    elif unchanged:
        series = [("probabilities (calibration changed nothing)", bins, ece, "tab:blue")]
    width = (bins[0]["hi"] - bins[0]["lo"]) if bins else 0.1
    for k, (name, bs, e, color) in enumerate(series):
        points = merge_sparse_bins(bs, min_count)
        label = name + (f", ECE {e:.3f}" if e is not None else "")
        x = [p["confidence"] for p in points]
        ax.plot(x, [p["accuracy"] for p in points], marker="o", color=color, label=label)
        band = [wilson_interval(p["accuracy"], p["count"]) for p in points]
        ax.fill_between(x, [b[0] for b in band], [b[1] for b in band], color=color, alpha=0.12, linewidth=0)
        off = (k - (len(series) - 1) / 2) * width / len(series)
        axn.bar([(b["lo"] + b["hi"]) / 2 + off for b in bs], [b["count"] for b in bs], width=width / len(series),
                color=color, alpha=0.7)
    notes = [f"each point: {min_count}+ texts (sparser bins merged)", "shaded: 95% interval of its accuracy"]
    if unchanged:
        t = "1" if temperature is None or temperature == 1 else f"{temperature:.3g}"
        notes[:0] = [f"temperature = {t}: scaling changed nothing,", "so 'before' and 'after' are one curve"]
    ax.text(0.98, 0.03, "\n".join(notes), transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "lightgrey"})
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(_titled(title, "reliability diagram (top-1 confidence)", 6), fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    axn.set_xlabel("confidence")
    axn.set_ylabel("texts per bin")
    axn.set_yscale("symlog")
    fig.tight_layout()
    return fig


def plot_reliability(bins: Sequence[dict], path: str | Path, *, uncalibrated: Sequence[dict] | None = None,
                     ece: float | None = None, ece_uncalibrated: float | None = None, temperature: float | None = None,
                     title: str | None = None, min_count: int = MIN_BIN_TEXTS) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, before/after calibration."""
    return _save(reliability_figure(bins, uncalibrated=uncalibrated, ece=ece, ece_uncalibrated=ece_uncalibrated,
                                    temperature=temperature, title=title, min_count=min_count), path)
