"""PNG plots people would rather look at than read: training curve, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curve(history: Sequence[dict], best_epoch: int, path: str | Path, title: str | None = None) -> Path:
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train loss (label smoothing + dropout)")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax2.plot(epochs, [h["val_accuracy"] for h in history], color="tab:green", label="validation accuracy")
    ax2.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, max_labels: int = 25) -> Path:
    """Confusion matrix, row-normalised; with many labels, the most-confused ones only."""
    plt = _plt()
    idx = np.arange(len(labels))
    if len(labels) > max_labels:
        off = cm.copy()
        np.fill_diagonal(off, 0)
        score = off.sum(0) + off.sum(1)
        idx = np.sort(np.argsort(-score, kind="stable")[:max_labels])
    sub = cm[np.ix_(idx, idx)].astype(float)
    norm = sub / np.maximum(cm[idx].sum(1, keepdims=True), 1)
    size = 3 + 0.35 * len(idx)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = [labels[i] for i in idx]
    ax.set_xticks(range(len(idx)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(idx)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    title = "confusion matrix (row-normalised)"
    if len(idx) < len(labels):
        title += f", {len(idx)} most-confused of {len(labels)} labels"
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_reliability(bins: Sequence[dict], path: str | Path, *, uncalibrated: Sequence[dict] | None = None,
                     ece: float | None = None, ece_uncalibrated: float | None = None) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, before/after calibration."""
    plt = _plt()
    fig, (ax, axn) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    series = [("calibrated", bins, ece, "tab:blue")]
    if uncalibrated is not None:
        series.insert(0, ("before temperature scaling", uncalibrated, ece_uncalibrated, "tab:orange"))
    width = (bins[0]["hi"] - bins[0]["lo"]) if bins else 0.1
    for k, (name, bs, e, color) in enumerate(series):
        used = [b for b in bs if b["count"]]
        label = name + (f" (ECE {e:.3f})" if e is not None else "")
        ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], marker="o", color=color, label=label)
        off = (k - (len(series) - 1) / 2) * width / len(series)
        axn.bar([(b["lo"] + b["hi"]) / 2 + off for b in bs], [b["count"] for b in bs], width=width / len(series),
                color=color, alpha=0.7)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("reliability diagram (top-1 confidence)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    axn.set_xlabel("confidence")
    axn.set_ylabel("texts")
    axn.set_yscale("symlog")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
