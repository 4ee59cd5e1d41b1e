"""``--multi-label`` for ``heads train`` and ``evaluate``: several labels per text, sigmoid head, per-label thresholds.

The label column holds the labels joined by ``--label-sep`` (default ``;``). Labels are
stripped; empty pieces (``a;;b``) are dropped. **A row whose label cell is empty is skipped**
(counted in ``skipped_rows``), as in single-label training: an empty cell is read as "not
annotated", not as "none of the labels". (A head learns "no label" from the other labels'
negatives and answers it at serving time by abstaining.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import click

from embedclf.cli.base import AppError
from embedclf.cli.common import echo_json
from embedclf.cli.report import report_stem
from embedclf.config import Settings

#: separators people use when the given one does not split anything
_OTHER_SEPS = (";", ",", "|", " ")


def multilabel_options(f):
    f = click.option("--max-labels", type=click.IntRange(0, 10_000), default=None,
                     help="With --multi-label: keep at most this many labels per text, the most probable over their "
                          "thresholds (0: no cap) [default: 0; see docs/multilabel.md].")(f)
    f = click.option("--min-labels", type=click.IntRange(0, 10_000), default=None,
                     help="With --multi-label: give every text at least this many labels, its most probable ones, "
                          "even under their thresholds (0: a text may get none, an abstention) [default: 1].")(f)
    f = click.option("--sparse-member/--no-sparse-member", "sparse_member", default=None,
                     help="With --multi-label: a third member over TF-IDF features of the texts "
                          "[default: on, chosen on GoEmotions dev; see docs/multilabel.md].")(f)
    f = click.option("--label-sep", default=";", show_default=True,
                     help="With --multi-label: the separator between the labels of one text.")(f)
    return click.option("--multi-label", "multi_label", is_flag=True,
                        help="The label column holds several labels per text (joined by --label-sep): "
                             "sigmoid outputs, per-label thresholds chosen on validation.")(f)


def split_labels(labels: Sequence[str], sep: str, source: str = "labels") -> list[list[str]]:
    """Each label cell split on ``sep`` into a sorted list of distinct labels (empty pieces dropped).

    Raises :class:`AppError` (one line) when the result cannot be a multi-label set: an empty
    separator, a row with no label left, fewer than 2 distinct labels, or no row with 2+ labels
    while the cells contain another usual separator (the separator is probably wrong).
    """
    if not sep:
        raise AppError("--label-sep must not be empty")
    sets = []
    for i, cell in enumerate(labels):
        pieces = sorted({p.strip() for p in str(cell).split(sep) if p.strip()})
        if not pieces:
            raise AppError(f"{source}: row {i + 1} has no label after splitting {cell!r} on {sep!r}")
        sets.append(pieces)
    distinct = {label for s in sets for label in s}
    if len(distinct) < 2:
        raise AppError(f"{source}: a multi-label head needs at least 2 distinct labels; splitting on {sep!r} gave "
                       f"{sorted(distinct)}")
    if not any(len(s) > 1 for s in sets):
        others = [o for o in _OTHER_SEPS if o != sep and any(o in label for label in distinct)]
        if others:
            raise AppError(f"{source}: no text has more than one label when split on {sep!r}, but labels contain "
                           f"{others[0]!r} (wrong --label-sep?)")
    return sets


def load_sets(path: str, text_col: str, label_col: str, sep: str) -> tuple[list[str], list[list[str]], int]:
    from embedclf.data import load_labeled

    data = load_labeled(path, text_col, label_col)
    return data.texts, split_labels(data.labels, sep, path), data.skipped


def check_ml_options(multi_label: bool, min_labels: int | None, max_labels: int | None,
                     knn_member: str = "auto") -> None:
    """``--min-labels`` / ``--max-labels`` need ``--multi-label`` and must not contradict each other; a kNN
    member (``--knn-member on``) is for single-label heads (``auto`` means none for a multi-label head)."""
    if multi_label and knn_member == "on":
        raise click.UsageError("--knn-member on is for single-label heads (multi-label heads have no kNN member)")
    if (min_labels is not None or max_labels is not None) and not multi_label:
        raise click.UsageError("--min-labels / --max-labels are for --multi-label")
    if min_labels and max_labels and min_labels > max_labels:
        raise click.UsageError(f"--min-labels {min_labels} is more than --max-labels {max_labels}")


def check_decision(decision: tuple[int | None, int | None], sets: Sequence[Sequence[str]]) -> None:
    """``--min-labels`` / ``--max-labels`` no larger than the number of labels (before the model loads)."""
    n = len({label for s in sets for label in s})
    for name, value in zip(("--min-labels", "--max-labels"), decision):
        if value is not None and value > n:
            raise AppError(f"{name} {value} is more than the {n} labels of the training data")


def ml_params(epochs: int | None, seed: int, linear_member: bool, sparse_member: bool | None = None,
              decision: tuple[int | None, int | None] = (None, None)):
    """The multi-label training parameters; ``decision`` = (min_labels, max_labels), None: the default."""
    from dataclasses import replace

    from embedclf.training.multilabel import MultiLabelParams

    p = MultiLabelParams(seed=seed, linear_member=linear_member)
    if sparse_member is not None:
        p = replace(p, sparse_member=sparse_member)
    if decision[0] is not None:
        p = replace(p, min_labels=decision[0])
    if decision[1] is not None:
        p = replace(p, max_labels=decision[1])
    return p if epochs is None else replace(p, epochs=epochs)


def _epoch_bar(quiet: bool, total: int):
    from embedclf.progress import bar

    state: dict = {}

    def on_epoch(epoch: int, total_epochs: int, row: dict) -> None:
        if "bar" not in state:
            state["bar"] = bar(total=total, desc="training", unit="epoch", disable=quiet)
        state["bar"].set_postfix(val_f1=f"{row['val_macro_f1']:.3f}", val_loss=f"{row['val_loss']:.3f}")
        state["bar"].update(1)

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return on_epoch, close


def run_evaluation(settings: Settings, embedder_spec: str | None, no_cache: bool, quiet: bool,
                   train: tuple[list[str], list[list[str]]], test: tuple[list[str], list[list[str]]],
                   params, val: tuple[list[str], list[list[str]]] | None = None):
    from embedclf.cli.common import embed_progress, load_embedder_verbose
    from embedclf.cli.data import cached
    from embedclf.training.mlevaluate import evaluate_multilabel

    embedder = cached(settings, load_embedder_verbose(settings, embedder_spec, quiet=quiet), no_cache, quiet)
    on_epoch, close = _epoch_bar(quiet, params.epochs)
    try:
        ev = evaluate_multilabel(embedder, train[0], train[1], test[0], test[1], params,
                                 embed_progress=embed_progress(quiet), on_epoch=on_epoch, val=val)
    finally:
        close()
    return ev, embedder


def evaluate_ml(settings: Settings, train_path: str, test_path: str, val_path: str | None, sep: str,
                embedder_spec: str | None, text_col: str, label_col: str, epochs: int | None, seed: int,
                linear_member: bool, plots_dir: str | None, as_json: bool, no_cache: bool,
                sparse_member: bool | None = None, decision: tuple[int | None, int | None] = (None, None)) -> None:
    """``embedclf evaluate --multi-label``."""
    from embedclf.cli.data import cache_line

    tr_texts, tr_sets, skipped = load_sets(train_path, text_col, label_col, sep)
    te_texts, te_sets, _ = load_sets(test_path, text_col, label_col, sep)
    val = load_sets(val_path, text_col, label_col, sep)[:2] if val_path else None
    check_decision(decision, tr_sets)
    params = ml_params(epochs, seed, linear_member, sparse_member, decision)
    ev, embedder = run_evaluation(settings, embedder_spec, no_cache, as_json, (tr_texts, tr_sets),
                                  (te_texts, te_sets), params, val)
    summary = ev.summary() | {"skipped_rows": skipped,
                              "embedding_cache": {"cached": embedder.hits, "embedded": embedder.embedded}}
    if plots_dir:
        summary["plots"] = write_ml_report(Path(plots_dir), f"evaluate {train_path} -> {test_path}", summary,
                                           ev.report, stem="evaluate")
    if as_json:
        echo_json(summary)
        return
    print_ml_report(summary)
    click.echo(f"  {cache_line(embedder)}")
    for p in summary.get("plots", []):
        click.echo(f"  wrote {p}")


def train_ml(settings: Settings, name: str, data, n_feedback: int, dataset: str | None, sep: str,
             embedder_spec: str | None, test_size: float, epochs: int | None, seed: int, linear_member: bool,
             activate: bool, plots_dir: str | None, as_json: bool, no_cache: bool,
             sparse_member: bool | None = None, decision: tuple[int | None, int | None] = (None, None)) -> None:
    """``embedclf heads train --multi-label``: a seeded random ``test_size`` is held out for the report."""
    import numpy as np

    from embedclf import headops
    from embedclf.cli.data import cache_line
    from embedclf.cli.db import require_database

    sets = split_labels(data.labels, sep, dataset or "data")
    check_decision(decision, sets)
    engine = require_database(settings)
    perm = np.random.default_rng(seed).permutation(len(sets))
    n_test = max(1, int(round(test_size * len(sets))))
    held, keep = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    pick = lambda idx, xs: [xs[i] for i in idx]  # noqa: E731
    known = {label for s in pick(keep, sets) for label in s}
    held = np.asarray([i for i in held if set(sets[i]) <= known], dtype=int)  # a test label must be trainable
    if len(held) == 0 or len(keep) < 2:
        raise AppError(f"too few rows ({len(sets)}) for a held-out report with --test-size {test_size}")
    params = ml_params(epochs, seed, linear_member, sparse_member, decision)
    ev, embedder = run_evaluation(settings, embedder_spec, no_cache, as_json, (pick(keep, data.texts),
                                  pick(keep, sets)), (pick(held, data.texts), pick(held, sets)), params)
    summary = ev.summary() | {"skipped_rows": data.skipped, "dataset": dataset, "n_feedback": n_feedback,
                              "embedding_cache": {"cached": embedder.hits, "embedded": embedder.embedded}}
    version = headops.store_version(engine, name, ev.result.head, ev.result.labels, embedder.model_id,
                                    activate=activate, data_fingerprint=data.fingerprint(), n_train=len(keep),
                                    metrics=summary | {"report": ev.report}, train_params=params.to_dict())
    summary.update(head=name, version=version, active=activate)
    if plots_dir:
        summary["plots"] = write_ml_report(Path(plots_dir), f"head {name} v{version}", summary, ev.report,
                                           stem=report_stem(name, version))
    if as_json:
        echo_json(summary)
        return
    print_ml_report(summary)
    if data.skipped:
        click.echo(f"  skipped {data.skipped} rows with an empty text or label")
    click.echo(f"  {cache_line(embedder)}")
    click.echo(f"stored multi-label head {name!r} version {version}" + (" (active)" if activate else " (not active)"))
    for p in summary.get("plots", []):
        click.echo(f"  plot: {p}")


def print_ml_report(s: dict) -> None:
    def f(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    click.echo(f"\n{s['n_train']} train / {s['n_val']} validation / {s['n_test']} test texts, {s['n_labels']} labels "
               f"(multi-label), embedder {s['embedder']}")
    click.echo(f"  {'':<18}{'head':>10}{'tf-idf OvR':>14}")
    for name, k in (("macro-F1", "macro_f1"), ("micro-F1", "micro_f1"), ("samples Jaccard", "samples_jaccard"),
                    ("labels / text", "cardinality_pred")):
        click.echo(f"  {name:<18}{f(s[k]):>10}{f(s['baseline_tfidf_' + k]):>14}")
    click.echo(f"  true labels / text {s['cardinality_true']}; texts with no label (abstained) {s['no_label_share']}")
    click.echo(f"  members {s['member_weights']}, global threshold {s['global_threshold']} "
               f"(fallback for {len(s['fallback_labels'])} labels); weakest: {'; '.join(s['weakest_labels'])}")
    click.echo(f"  embed {s['embed_seconds']}s, train {s['train_seconds']}s (best epoch {s['best_epoch']}), "
               f"baseline {s['baseline_seconds']}s")


def write_ml_report(out: Path, title: str, summary: dict, report: dict, stem: str = "") -> list[str]:
    """report.json, report.md and the per-label F1 bar chart in ``out``; returns the paths."""
    import json

    from embedclf.mlreports import markdown, plot_label_f1

    out.mkdir(parents=True, exist_ok=True)
    pre = f"{stem}-" if stem else ""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", pre)
    png = plot_label_f1(report["per_label"], report.get("baseline_per_label"), out / f"{safe}label_f1.png",
                        f"per-label F1 on {summary['n_test']} test texts: head macro-F1 {summary['macro_f1']}, "
                        f"TF-IDF baseline {summary['baseline_tfidf_macro_f1']}")
    js = out / f"{safe}report.json"
    js.write_text(json.dumps({"summary": summary, "report": report}, indent=2, sort_keys=True, default=str))
    md = out / f"{safe}report.md"
    md.write_text(markdown(title, summary, report, [str(png)]))
    return [str(js), str(md), str(png)]
