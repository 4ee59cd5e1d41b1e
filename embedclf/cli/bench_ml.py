"""``embedclf bench mlheads``: multi-label head variants on training-side data (train -> dev, or k folds)."""

from __future__ import annotations

import click

from embedclf.cli.common import echo_json, embedder_option, load_embedder_verbose
from embedclf.config import Settings


@click.command("mlheads")
@click.option("--train", "train_path", required=True, type=click.Path(dir_okay=False), help="Training file.")
@click.option("--dev", "dev_path", type=click.Path(dir_okay=False),
              help="Development file to score on (never the test file); without it: --folds on --train.")
@click.option("--text-col", default="text", show_default=True, help="Column holding the text.")
@click.option("--label-col", default="labels", show_default=True, help="Column holding the labels of a text.")
@click.option("--label-sep", default=";", show_default=True, help="Separator between the labels in --label-col.")
@click.option("-n", "n", default=None, type=click.IntRange(1), help="First N training rows (default: all).")
@embedder_option
@click.option("--variants", default="dense,sparse,sparse-average,sparse-unweighted,sparse-global-threshold",
              show_default=True,
              help="Comma-separated variants (see embedclf/bench/mlheads.py); the first is the reference.")
@click.option("--folds", default=3, show_default=True, type=click.IntRange(2, 20),
              help="Without --dev: k-fold cross-validation on --train.")
@click.option("--epochs", default=None, type=click.IntRange(1, 10_000), help="Max epochs (default 40).")
@click.option("--no-cache", is_flag=True, help="Do not use the Postgres embedding cache.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (no progress bars).")
@click.pass_obj
def mlheads(settings: Settings, train_path: str, dev_path: str | None, text_col: str, label_col: str, label_sep: str,
            n: int | None, embedder_spec: str | None, variants: str, folds: int, epochs: int | None, no_cache: bool,
            as_json: bool) -> None:
    """Compare multi-label head variants by macro-F1 on a dev file or k folds (no test data)."""
    from dataclasses import replace

    from embedclf.bench.machine import machine_info
    from embedclf.bench.mlheads import compare, ml_report, parse_ml_variants
    from embedclf.cli.common import embed_progress
    from embedclf.cli.data import cached
    from embedclf.cli.multilabel import load_sets
    from embedclf.progress import bar
    from embedclf.training.multilabel import MultiLabelParams

    names = parse_ml_variants(variants)
    texts, sets, _ = load_sets(train_path, text_col, label_col, label_sep)
    texts, sets = texts[:n], sets[:n]
    dev = load_sets(dev_path, text_col, label_col, label_sep)[:2] if dev_path else None
    emb = cached(settings, load_embedder_verbose(settings, embedder_spec, quiet=as_json), no_cache, as_json)
    progress = embed_progress(as_json)
    X = emb.embed(texts, progress(len(texts)))
    dev_x = (emb.embed(dev[0], progress(len(dev[0]))), dev[1], dev[0]) if dev else None
    base = MultiLabelParams() if epochs is None else replace(MultiLabelParams(), epochs=epochs)
    runs = len(names) * (1 if dev else folds)
    b = bar(total=runs, desc="variants", unit="head", disable=as_json)

    def on_fold(r: dict) -> None:
        b.update(1)
        if not as_json:  # each result as it comes: a long run shows its figures before the end
            click.echo(f"  fold {r['fold']} {r['variant']}: macro-F1 {r['macro_f1']:.4f}, micro-F1 {r['micro_f1']:.4f}"
                       f", {r['seconds']:.0f}s, weights {r['member_weights']}", err=True)

    try:
        report = compare(X, sets, texts, names, dev=dev_x, folds=folds, base=base, on_fold=on_fold)
    finally:
        b.close()
    report.update(data=train_path, dev=dev_path, embedder=emb.model_id, machine=machine_info(emb.model_id))
    if as_json:
        echo_json(report)
    else:
        ml_report(report, click.echo)
