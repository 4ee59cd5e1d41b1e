"""``embedclf data import|list|export|delete``, ``embedclf feedback``, and the training-data and
embedding-cache helpers that ``heads train`` and ``evaluate`` use."""

from __future__ import annotations

import csv
import getpass
import json
import sys
from pathlib import Path

import click

from embedclf.cli.base import AppError
from embedclf.cli.common import echo_json
from embedclf.cli.db import require_database
from embedclf.config import Settings


@click.group()
def data() -> None:
    """Labelled datasets stored in Postgres (train heads with `heads train --dataset NAME`)."""


@data.command(name="import")
@click.option("--dataset", "name", required=True, help="Dataset name (created if missing; rows are added).")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--text-col", default="text", show_default=True, help="Column holding the text.")
@click.option("--label-col", default="label", show_default=True, help="Column holding the label.")
@click.pass_obj
def import_(settings: Settings, name: str, file: str, text_col: str, label_col: str) -> None:
    """Add the labelled rows of FILE (CSV, TSV, JSONL, JSON list) to a dataset; exact duplicates are skipped."""
    from embedclf.data import load_labeled
    from embedclf.store.datasets import import_examples

    if not name.strip() or len(name) > 128:
        raise click.BadParameter("must be 1-128 characters", param_hint="--dataset")
    labeled = load_labeled(file, text_col, label_col)
    engine = require_database(settings)
    res = import_examples(engine, name, labeled.texts, labeled.labels, created_by=getpass.getuser())
    note = f", {labeled.skipped} rows without text or label skipped" if labeled.skipped else ""
    click.echo(f"dataset {name!r}{' (new)' if res.created else ''}: {res.inserted} examples added, "
               f"{res.duplicates} duplicates skipped{note}")


@data.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of datasets (dates in ISO 8601).")
@click.pass_obj
def list_(settings: Settings, as_json: bool) -> None:
    """List datasets with their example and label counts."""
    from embedclf.store.datasets import list_datasets

    rows = list_datasets(require_database(settings))
    if as_json:
        echo_json([{"name": r.name, "examples": r.n_examples, "labels": r.n_labels, "created_at": r.created_at,
                    "created_by": r.created_by} for r in rows])
        return
    if not rows:
        click.echo("no datasets yet: add one with `embedclf data import --dataset NAME FILE`")
        return
    click.echo(f"{'name':<30}{'examples':>9}{'labels':>8}  created")
    for r in rows:
        click.echo(f"{r.name:<30}{r.n_examples:>9}{r.n_labels:>8}  {r.created_at:%Y-%m-%d %H:%M}")


@data.command()
@click.option("--dataset", "name", required=True, help="Dataset to export.")
@click.option("--out", "out", type=click.Path(dir_okay=False),
              help="File to write (.csv, .tsv or .jsonl; default: CSV on stdout).")
@click.pass_obj
def export(settings: Settings, name: str, out: str | None) -> None:
    """Write a dataset's examples (columns text, label) in insertion order."""
    from embedclf.store.datasets import fetch_examples

    suffix = Path(out).suffix.lower() if out else ".csv"
    if suffix not in {".csv", ".tsv", ".jsonl"}:
        raise AppError(f"{out}: --out must end in .csv, .tsv or .jsonl")
    texts, labels = fetch_examples(require_database(settings), name)
    f = open(out, "w", encoding="utf-8", newline="") if out else sys.stdout
    try:
        if suffix == ".jsonl":
            for t, y in zip(texts, labels):
                f.write(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n")
        else:
            w = csv.writer(f, dialect="excel-tab" if suffix == ".tsv" else "excel")
            w.writerow(["text", "label"])
            w.writerows(zip(texts, labels))
    finally:
        if out:
            f.close()
    if out:
        click.echo(f"wrote {len(texts)} examples of {name!r} to {out}", err=True)


@data.command()
@click.option("--dataset", "name", required=True, help="Dataset to delete, with its examples.")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_obj
def delete(settings: Settings, name: str, yes: bool) -> None:
    """Delete a dataset and its examples."""
    from embedclf.store.datasets import delete_dataset

    if not yes:
        click.confirm(f"delete dataset {name!r} and its examples?", abort=True)
    n = delete_dataset(require_database(settings), name)
    click.echo(f"deleted dataset {name!r} ({n} examples)")


@click.command()
@click.argument("task_id")
@click.argument("label")
@click.option("--head", default=None, help="Head the label is for (needed when the task ran several heads).")
@click.option("--note", default=None, help="Free text stored with the feedback.")
@click.pass_obj
def feedback(settings: Settings, task_id: str, label: str, head: str | None, note: str | None) -> None:
    """Record LABEL as the correct label of task TASK_ID (`heads train --with-feedback` uses it)."""
    from embedclf.store.datasets import add_feedback

    if "\x00" in task_id + label + (note or ""):
        raise AppError("task id, label and note cannot contain NUL characters")
    used = add_feedback(require_database(settings), task_id, label, head, note=note, source="cli",
                        created_by=getpass.getuser())
    click.echo(f"feedback stored: task {task_id} head {used!r} label {label!r}")


# -- helpers for `heads train` and `evaluate` ------------------------------------------------------------


def load_training_data(settings: Settings, data_path: str | None, dataset: str | None, with_feedback: bool,
                       head: str | None, text_col: str, label_col: str):
    """A :class:`~embedclf.data.Labeled` from a file or a stored dataset (plus feedback on ``head``)."""
    from embedclf.data import Labeled, load_labeled

    if (data_path is None) == (dataset is None):
        raise AppError("give exactly one of --data FILE or --dataset NAME")
    if with_feedback and dataset is None:
        raise AppError("--with-feedback needs --dataset NAME")
    if data_path is not None:
        return load_labeled(data_path, text_col, label_col), 0
    from embedclf.store.datasets import training_examples

    assert dataset is not None  # callers pass --dataset NAME here
    engine = require_database(settings)
    try:
        texts, labels, n_fb = training_examples(engine, dataset, head if with_feedback else None)
    finally:
        engine.dispose()
    if not texts:
        raise AppError(f"dataset {dataset!r} has no examples")
    return Labeled(texts, labels), n_fb


def cached(settings: Settings, embedder, no_cache: bool, quiet: bool):
    """Wrap ``embedder`` with the Postgres embedding cache (in-memory only with ``no_cache``).

    An unreachable or un-migrated database turns the Postgres cache off with a note, not an error:
    evaluation works without it.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from embedclf.store.db import DatabaseUnavailable, make_engine, ping
    from embedclf.store.embcache import CachedEmbedder, count

    if no_cache:
        return CachedEmbedder(embedder, None)
    engine = make_engine(settings.database_url)
    try:
        ping(engine)
        count(engine, "-")  # the table exists (schema 0002 or later)
    except (DatabaseUnavailable, SQLAlchemyError) as exc:
        engine.dispose()
        if not quiet:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            click.echo(f"note: embedding cache off ({reason[:200]})", err=True)
        return CachedEmbedder(embedder, None)
    return CachedEmbedder(embedder, engine)


def cache_line(emb) -> str:
    where = "Postgres" if emb.engine is not None else "memory only"
    return f"embedding cache ({where}): {emb.hits} texts cached, {emb.embedded} embedded"


def run_search(emb, texts: list[str], labels: list[str], params, n_trials: int, quiet: bool):
    """Optuna search on the training part's validation slice; returns (best params, stored summary)."""
    from embedclf.cli.common import embed_progress
    from embedclf.progress import bar as progress_bar
    from embedclf.training.search import search_params

    X = emb.embed(texts, embed_progress(quiet)(len(texts)))  # kept in memory: the final training reuses it
    bar = progress_bar(total=n_trials, desc="search", unit="trial", disable=quiet)
    best = [0.0]

    def on_trial(row: dict) -> None:
        best[0] = max(best[0], row["val_accuracy"])
        bar.set_postfix(best_val_acc=f"{best[0]:.3f}")
        bar.update(1)

    try:
        res = search_params(X, labels, n_trials, params, on_trial=on_trial, texts=texts)
    finally:
        bar.close()
    return res.best, res.to_dict()


def training_data_options(f):
    """``heads train`` options: --dataset, --with-feedback, --no-cache, --search."""
    f = click.option("--search", "search_trials", default=0, show_default=True, type=click.IntRange(0, 10_000),
                     help="Optuna trials of hyper-parameter search on the validation slice (0 = off).")(f)
    f = no_cache_option(f)
    f = click.option("--with-feedback", is_flag=True,
                     help="Add the feedback recorded for this head (needs --dataset).")(f)
    return click.option("--dataset", default=None, help="Train on a stored dataset instead of --data FILE.")(f)


def no_cache_option(f):
    return click.option("--no-cache", is_flag=True,
                        help="Do not read or fill the Postgres embedding cache (embed every text).")(f)
