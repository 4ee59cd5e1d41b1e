"""Multi-label reports: the per-label F1 bar chart (PNG) and report.md."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from embedclf.reports import _plt


def plot_label_f1(per_label: Sequence[dict], baseline: Sequence[dict] | None, path: str | Path,
                  title: str | None = None) -> Path:
    """Horizontal bars, one row per label sorted by the head's F1 (best on top), the baseline next to it."""
    plt = _plt()
    rows = sorted(per_label, key=lambda r: (r["f1"], r["label"]))
    base = {r["label"]: r["f1"] for r in (baseline or [])}
    n = len(rows)
    fig, ax = plt.subplots(figsize=(8.5, 1.6 + 0.32 * n))
    ys = range(n)
    h = 0.4 if base else 0.7
    ax.barh([y + (h / 2 if base else 0) for y in ys], [r["f1"] for r in rows], height=h, color="tab:blue",
            label="head (per-label thresholds)")
    if base:
        vals = [base.get(r["label"], math.nan) for r in rows]
        ax.barh([y - h / 2 for y in ys], [0 if math.isnan(v) else v for v in vals], height=h, color="tab:orange",
                alpha=0.85, label="TF-IDF one-vs-rest LR (one global threshold)")
    ax.set_yticks(list(ys), [f"{r['label']} (n={r['support']})" for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 on the test texts")
    ax.grid(axis="x", alpha=0.3)
    # above the bars (ncol 2), so no bar is ever hidden behind it
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10, pad=22)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _f(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


def markdown(title: str, summary: dict, report: dict, plots: Sequence[str]) -> str:
    s = summary
    out = [f"# {title}", "",
           f"{s.get('n_train')} train / {s.get('n_val')} validation / {s.get('n_test')} test texts, "
           f"{s.get('n_labels')} labels, embedder `{s.get('embedder')}` (multi-label)", "",
           "| metric | head | TF-IDF one-vs-rest baseline (same split) |", "|---|---|---|"]
    for name, k in (("macro-F1", "macro_f1"), ("micro-F1", "micro_f1"), ("samples Jaccard", "samples_jaccard"),
                    ("labels per text (true " + _f(s.get("cardinality_true")) + ")", "cardinality_pred")):
        out.append(f"| {name} | {_f(s.get(k))} | {_f(s.get('baseline_tfidf_' + k))} |")
    th = report.get("thresholds", {})
    out += ["", f"Member weights {s.get('member_weights')}; global threshold {_f(th.get('global_threshold'))} "
            f"(used by labels with fewer than {th.get('min_positives')} validation positives: "
            f"{', '.join(s.get('fallback_labels') or []) or 'none'}); baseline threshold "
            f"{_f(s.get('baseline_tfidf_threshold'))}.", "",
            "## Per label", "", "| label | precision | recall | F1 | baseline F1 | threshold | support | predicted |",
            "|---|---|---|---|---|---|---|---|"]
    base = {r["label"]: r["f1"] for r in report.get("baseline_per_label", [])}
    for r in sorted(report.get("per_label", []), key=lambda r: -r["f1"]):
        out.append(f"| {r['label']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
                   f"{base.get(r['label'], math.nan):.3f} | {r.get('threshold', math.nan):.3f} | {r['support']} | "
                   f"{r['predicted']} |")
    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(out) + "\n"
