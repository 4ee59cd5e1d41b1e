"""``embedclf heads report``: the stored evaluation report of a head version as JSON, Markdown and PNGs.

``heads train`` stores everything a report needs with the version
(``heads.metrics``: the summary figures plus ``"report"``: per-class figures,
confused pairs, calibration bins, training history, confusion cells), so a
report can be rebuilt at any time without the training data.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from embedclf.cli.base import AppError
from embedclf.cli.common import to_json
from embedclf.config import Settings

WORST_CLASSES = 5


def report_stem(head: str, version: int) -> str:
    """``<head>-v<version>``, the prefix of every report file of a head version (``heads train --plots``,
    ``heads report``); characters a file name should not hold become ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", head).lstrip(".") or "_"
    return f"{safe}-v{version}"


def _f(v: object, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, float) else ("-" if v is None else str(v))


def quality_lines(summary: dict, report: dict) -> list[str]:
    """The report beyond the headline table: calibration, abstention, confusions, weakest classes."""
    lines: list[str] = []
    cal = report.get("calibration")
    if cal:
        lines.append(f"  calibration      ECE {cal['ece']:.4f} after temperature {cal['temperature']:.3f} "
                     f"(before: {cal['ece_uncalibrated']:.4f}; {cal['n_bins']} bins)")
    members = report.get("members") or {}
    if len(members) > 1:
        lines.append("  members          " + "; ".join(
            f"{name} val {m['val_accuracy']:.4f} (T {m['temperature']:.3f}"
            + (f", w {m['weight']:.2f}" if "weight" in m else "") + ")" for name, m in members.items())
            + f"; averaged: val {_f(summary.get('val_accuracy'))}")
    knn = summary.get("knn_member") or {}
    if knn.get("mode") == "auto":
        lines.append(f"  kNN member       {'kept' if knn['kept'] else 'left out'} (--knn-member auto): validation NLL "
                     f"{knn['val_nll_with']:.4f} with it, {knn['val_nll_without']:.4f} without")
    ab = report.get("abstain")
    if ab:
        t = ab.get("test", {})
        lines.append(f"  abstention       threshold {ab['threshold']:.4f} ({ab['criterion']})"
                     + (f", out-of-scope label {ab['oos_label']!r}" if ab.get("oos_label") else ""))
        parts = [f"in-scope accuracy {_f(t.get('in_scope_accuracy'))}",
                 f"answered {_f(t.get('in_scope_answered'))}",
                 f"answered precision {_f(t.get('answered_precision'))}"]
        if "oos_recall" in t:
            parts.append(f"OOS recall {_f(t['oos_recall'])} of {t['n_oos']}")
        lines.append("  on test          " + ", ".join(parts))
    pairs = report.get("confused_pairs", [])
    if pairs:
        lines.append("  most confused    " + "; ".join(
            f"{p['true']} -> {p['predicted']} ({p['count']})" for p in pairs[:5]))
    rows = sorted(report.get("per_class", []), key=lambda r: (r["f1"], r["label"]))[:WORST_CLASSES]
    if rows:
        lines.append("  weakest classes  " + "; ".join(
            f"{r['label']} F1 {r['f1']:.2f} (P {r['precision']:.2f} R {r['recall']:.2f}, n={r['support']})"
            for r in rows))
    return lines


def echo_quality(summary: dict, report: dict) -> None:
    for line in quality_lines(summary, report):
        click.echo(line)


def markdown(title: str, summary: dict, report: dict, plots: list[str]) -> str:
    """A human-readable report.md."""
    s = summary
    out = [f"# {title}", "",
           f"{s.get('n_train')} train / {s.get('n_test')} test texts, {s.get('n_labels')} labels, "
           f"embedder `{s.get('embedder')}`", "",
           "| metric | head | TF-IDF baseline (same split) |", "|---|---|---|"]
    for name, k, b in (("accuracy", "accuracy", "baseline_tfidf_accuracy"), ("macro-F1", "macro_f1",
                       "baseline_tfidf_macro_f1"), ("MAP@3", "map3", "baseline_tfidf_map3"),
                       ("top-3 accuracy", "top3_accuracy", None)):
        out.append(f"| {name} | {_f(s.get(k))} | {_f(s.get(b)) if b else '-'} |")
    out += ["", "```", *[ln.strip() for ln in quality_lines(summary, report)], "```", ""]
    pairs = report.get("confused_pairs", [])
    if pairs:
        out += ["## Most-confused pairs", "", "| true | predicted as | texts | share of true class |",
                "|---|---|---|---|"]
        out += [f"| {p['true']} | {p['predicted']} | {p['count']} | {p['share']:.2f} |" for p in pairs]
        out.append("")
    out += ["## Per class", "", "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    out += [f"| {r['label']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
            for r in report.get("per_class", [])]
    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(out) + "\n"


def write_plots(report: dict, out: Path, stem: str, title: str = "") -> list[str]:
    """Training curve, confusion matrix and reliability diagram as ``<stem>-<kind>.png``, titled ``title``."""
    from embedclf.reports import plot_confusion, plot_reliability, plot_training_curve
    from embedclf.training.quality import dense_confusion

    out.mkdir(parents=True, exist_ok=True)
    pre = f"{stem}-"
    paths = []
    if report.get("history"):
        what = ("training curve of the MLP member (the linear member is fitted by L-BFGS: no epochs)"
                if len(report.get("members") or {}) > 1 else "training curve")
        paths.append(plot_training_curve(report["history"], report.get("best_epoch", 0), out / f"{pre}training.png",
                                         title or None, what))
    labels = report.get("labels", [])
    if labels:
        cm = dense_confusion(report.get("confusion", []), len(labels))
        paths.append(plot_confusion(cm, labels, out / f"{pre}confusion.png", title=title or None))
    cal = report.get("calibration")
    if cal:
        paths.append(plot_reliability(cal["bins"], out / f"{pre}reliability.png", uncalibrated=cal["bins_uncalibrated"],
                                      ece=cal["ece"], ece_uncalibrated=cal["ece_uncalibrated"],
                                      temperature=cal.get("temperature"), title=title or None))
    return [str(p) for p in paths]


def write_report(out: Path, title: str, summary: dict, report: dict, stem: str) -> list[str]:
    """``<stem>-report.json``, ``<stem>-report.md`` and the PNGs in ``out``; returns every path written."""
    plots = write_plots(report, out, stem, title)
    pre = f"{stem}-"
    js = out / f"{pre}report.json"
    js.write_text(to_json({"summary": summary, "report": report}, indent=2))
    md = out / f"{pre}report.md"
    md.write_text(markdown(title, summary, report, plots))
    return [str(js), str(md), *plots]


@click.command(name="report")
@click.argument("name")
@click.argument("version", required=False, type=int)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for NAME-vVERSION-report.json, -report.md and the -training, -confusion and "
                   "-reliability PNGs.")
@click.pass_obj
def report_cmd(settings: Settings, name: str, version: int | None, out_dir: str) -> None:
    """Write the stored evaluation report of a head version (default: the active one)."""
    from embedclf.cli.common import print_report
    from embedclf.cli.db import require_database
    from embedclf.store import repository

    meta, _ = repository.load_head(require_database(settings), name, version)
    metrics = dict(meta.metrics)
    report = metrics.pop("report", None)
    if not report:
        raise AppError(f"head {name!r} version {meta.version} has no stored report (trained before reports were "
                       "stored); retrain it with `embedclf heads train`")
    if report.get("head_type") == "multi_label":
        from embedclf.cli.multilabel import print_ml_report, write_ml_report

        paths = write_ml_report(Path(out_dir), f"head {name} v{meta.version}", metrics, report,
                                stem=report_stem(name, meta.version))
        print_ml_report(metrics)
        for p in paths:
            click.echo(f"  wrote {p}")
        return
    paths = write_report(Path(out_dir), f"head {name} v{meta.version}", metrics, report,
                         stem=report_stem(name, meta.version))
    print_report(metrics)
    echo_quality(metrics, report)
    for p in paths:
        click.echo(f"  wrote {p}")
