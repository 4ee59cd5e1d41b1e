"""``embedclf evaluate``: train on one file, test on another, store nothing."""

from __future__ import annotations

from pathlib import Path

import click

from embedclf.cli import cli
from embedclf.cli.common import (
    columns_options, echo_json, embed_progress, embedder_option, epoch_progress, load_embedder_verbose,
    params_from, print_report, train_options,
)
from embedclf.config import Settings


@cli.command()
@click.option("--train", "train_path", required=True, type=click.Path(dir_okay=False), help="Training file.")
@click.option("--test", "test_path", required=True, type=click.Path(dir_okay=False), help="Test file.")
@embedder_option
@columns_options
@train_options
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), help="Write training-curve and confusion PNGs here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (no progress bars).")
@click.pass_obj
def evaluate(settings: Settings, train_path: str, test_path: str, embedder_spec: str | None, text_col: str,
             label_col: str, epochs: int | None, seed: int, plots_dir: str | None, as_json: bool) -> None:
    """Train a head on TRAIN, score it on TEST next to a TF-IDF + linear baseline."""
    from embedclf.cli.heads import _plots
    from embedclf.data import load_labeled
    from embedclf.training.evaluate import evaluate_head

    train = load_labeled(train_path, text_col, label_col)
    test = load_labeled(test_path, text_col, label_col)
    unseen = sorted(set(test.labels) - set(train.labels))
    if unseen:
        shown = ", ".join(repr(u) for u in unseen[:5])
        raise ValueError(f"{len(unseen)} test label(s) never appear in training: {shown}")
    embedder = load_embedder_verbose(settings, embedder_spec, quiet=as_json)
    params = params_from(epochs, seed)
    on_epoch, bar = epoch_progress(as_json, params.epochs)
    ev = evaluate_head(embedder, train.texts, train.labels, test.texts, test.labels, params,
                       embed_progress=embed_progress(as_json), on_epoch=on_epoch)
    bar.close()
    summary = ev.summary()
    if plots_dir:
        summary["plots"] = _plots(ev, Path(plots_dir), "evaluate")
    if as_json:
        echo_json(summary)
    else:
        print_report(summary)
