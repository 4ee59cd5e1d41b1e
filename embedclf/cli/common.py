"""Pieces shared by CLI commands: options, progress bars, embedder loading, printing."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from embedclf.config import DEFAULT_EMBEDDER, Settings
from embedclf.progress import bar as progress_bar


def embedder_option(f: Callable) -> Callable:
    return click.option(
        "--embedder", "embedder_spec", default=None,
        help=f"Embedder spec (default: EMBEDCLF_EMBEDDER, else {DEFAULT_EMBEDDER}). "
             "E.g. minilm, minilm-int8, gemma3-270m, llama:/path.gguf",
    )(f)


def columns_options(f: Callable) -> Callable:
    f = click.option("--label-col", default="label", show_default=True, help="Column holding the label.")(f)
    return click.option("--text-col", default="text", show_default=True, help="Column holding the text.")(f)


#: the head recipe `heads train` / `evaluate` use by default (chosen by `bench heads`, see docs/training.md;
#: refit: 3-fold CV on BANKING77 train, +0.21 ± 0.07 pt over no refit, 3/3 folds)
DEFAULT_TFIDF_MEMBER = True
DEFAULT_MEMBER_WEIGHTS = "equal"
DEFAULT_REFIT = True
DEFAULT_KNN_MEMBER = "auto"


def _member_weights(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from embedclf.training.trainer import fixed_weights

    try:
        fixed_weights(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def train_options(f: Callable) -> Callable:
    f = click.option("--seed", default=0, show_default=True, type=int,
                     help="Random seed of the data splits (held-out, validation) and of the training.")(f)
    f = click.option("--refit/--no-refit", default=DEFAULT_REFIT, show_default=True,
                     help="After the validation slice has chosen epochs, temperatures and weights, fit the linear "
                          "and TF-IDF members again on training + validation texts (not with a separate "
                          "validation set such as CLINC150's).")(f)
    f = click.option("--knn-member", type=click.Choice(["auto", "on", "off"]), default=DEFAULT_KNN_MEMBER,
                     show_default=True,
                     help="A member voting with the 10 nearest training texts (cosine; their vectors are stored with "
                          "the head), 0.3 of the mix; auto: kept only when it lowers the validation NLL.")(f)
    f = click.option("--member-weights", default=DEFAULT_MEMBER_WEIGHTS, show_default=True, callback=_member_weights,
                     help="How a hybrid head mixes its members' calibrated probabilities: 'equal', 'fit' (weights "
                          "fitted on the validation split) or fixed weights mlp/linear/tfidf such as 0.25/0.25/0.5.")(f)
    f = click.option("--tfidf-member/--no-tfidf-member", default=DEFAULT_TFIDF_MEMBER, show_default=True,
                     help="Hybrid head: also fit a linear model over TF-IDF word + char n-grams of the texts and "
                          "mix its calibrated probabilities with the dense members' (workers compute the TF-IDF "
                          "features of each batch).")(f)
    f = click.option("--linear-member/--no-linear-member", default=True, show_default=True,
                     help="Also fit a softmax regression and average its calibrated probabilities with the MLP's.")(f)
    f = click.option("--epochs", default=None, type=click.IntRange(1, 10_000), help="Max epochs (default 30).")(f)
    return f


def params_from(epochs: int | None, seed: int, linear_member: bool = True, tfidf_member: bool = DEFAULT_TFIDF_MEMBER,
                member_weights: str = DEFAULT_MEMBER_WEIGHTS, refit: bool = DEFAULT_REFIT,
                knn_member: str = DEFAULT_KNN_MEMBER):
    from embedclf.training.trainer import TrainParams

    params = TrainParams(seed=seed, linear_member=linear_member, tfidf_member=tfidf_member,
                         member_weights=member_weights, refit=refit, knn_member=knn_member)
    if epochs is not None:
        from dataclasses import replace

        params = replace(params, epochs=epochs)
    return params


def load_embedder_verbose(settings: Settings, spec: str | None, quiet: bool = False):
    from embedclf.embedders.spec import load_embedder, parse_spec

    spec = spec or settings.embedder
    parse_spec(spec)  # a bad spec fails before anything is printed
    t0 = time.perf_counter()
    if not quiet:
        click.echo(f"loading embedder {spec} ...", err=True)
    emb = load_embedder(spec, model_dir=settings.model_dir)
    if not quiet:
        click.echo(f"embedder {emb.model_id} (dim {emb.dim}) ready in {time.perf_counter() - t0:.1f}s", err=True)
    return emb


def embed_progress(quiet: bool):
    def factory(total: int):
        bar = progress_bar(total=total, desc="embedding", unit="text", file=sys.stderr, disable=quiet,
                           dynamic_ncols=True)

        def update(n: int) -> None:
            bar.update(n)
            if bar.n >= total:
                bar.close()

        return update
    return factory


def epoch_progress(quiet: bool, total: int):
    """A per-epoch callback drawing a bar (created at the first epoch) and a closer."""
    bars: list[Any] = []

    def on_epoch(epoch: int, total_epochs: int, row: dict) -> None:
        if not bars:
            bars.append(progress_bar(total=total, desc="training", unit="epoch", file=sys.stderr, disable=quiet,
                             dynamic_ncols=True))
        bars[0].set_postfix(val_acc=f"{row['val_accuracy']:.3f}", val_loss=f"{row['val_loss']:.3f}")
        bars[0].update(1)

    class Closer:
        def close(self) -> None:
            for b in bars:
                b.close()

    return on_epoch, Closer()


def print_report(summary: dict) -> None:
    rows = [
        ("", "head", "tf-idf baseline"),
        ("accuracy", summary["accuracy"], summary["baseline_tfidf_accuracy"]),
        ("macro-F1", summary["macro_f1"], summary["baseline_tfidf_macro_f1"]),
        ("MAP@3", summary["map3"], summary["baseline_tfidf_map3"]),
        ("top-3 accuracy", summary["top3_accuracy"], "-"),
    ]
    click.echo(f"\n{summary['n_train']} train / {summary['n_test']} test texts, {summary['n_labels']} labels, "
               f"embedder {summary['embedder']}")
    for name, a, b in rows:
        fa = f"{a:.4f}" if isinstance(a, float) else str(a)
        fb = f"{b:.4f}" if isinstance(b, float) else str(b)
        click.echo(f"  {name:<16}{fa:>10}{fb:>18}")
    click.echo(f"  embed {summary['embed_seconds']}s, train {summary['train_seconds']}s "
               f"(best epoch {summary['best_epoch']}, temperature {summary['temperature']})")


def json_default(value: object) -> object:
    """What ``json.dumps`` cannot write itself: dates and times as ISO 8601, numpy scalars as numbers, else text."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    return str(value)


def to_json(obj: Any, **kwargs: Any) -> str:
    """The one JSON encoding of every ``--json`` output (sorted keys, ISO 8601 dates)."""
    return json.dumps(obj, default=json_default, sort_keys=True, **kwargs)


def echo_json(obj: Any) -> None:
    click.echo(to_json(obj))
