"""``embedclf heads train|list|show|activate|rollback``."""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from embedclf.cli.common import (
    columns_options,
    echo_json,
    embed_progress,
    embedder_option,
    epoch_progress,
    load_embedder_verbose,
    params_from,
    print_report,
    train_options,
)
from embedclf.cli.data import training_data_options
from embedclf.cli.db import require_database
from embedclf.cli.multilabel import check_ml_options, multilabel_options
from embedclf.config import Settings


@click.group()
def heads() -> None:
    """Trained classification heads (versioned, one active version per name)."""


@heads.command()
@click.option("--name", required=True, help="Head name tasks refer to.")
@click.option("--data", "data_path", default=None, type=click.Path(dir_okay=False),
              help="Labelled file: .csv, .tsv, .jsonl/.ndjson or .json (a list of objects).")
@training_data_options
@embedder_option
@columns_options
@click.option("--test-size", default=0.2, show_default=True, type=click.FloatRange(0.05, 0.5),
              help="Held-out fraction for the report.")
@train_options
@click.option("--activate/--no-activate", default=True, show_default=True,
              help="Make the new version the active one (workers serve it within EMBEDCLF_HEAD_REFRESH_S).")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False),
              help="Write NAME-vVERSION-report.json, -report.md and the -training, -confusion and -reliability "
                   "PNGs here (the names `heads report` writes).")
@click.option("--abstain-precision", type=click.FloatRange(0.01, 1.0), default=None,
              help="Let the head abstain (no label) below the confidence at which validation answers reach this "
                   "precision, e.g. 0.95; stored with the head.")
@click.option("--oos-data", "oos_path", default=None, type=click.Path(dir_okay=False),
              help="A file of out-of-scope texts (same --text-col), which the head should refuse: half choose its "
                   "abstention threshold on the kNN out-of-scope score (stored with the head), half report "
                   "out-of-scope recall.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@multilabel_options
@click.pass_obj
def train(settings: Settings, name: str, data_path: str | None, embedder_spec: str | None, text_col: str,
          label_col: str, test_size: float, epochs: int | None, seed: int, linear_member: bool, tfidf_member: bool,
          member_weights: str, refit: bool, knn_member: str, activate: bool,
          plots_dir: str | None,
          as_json: bool, abstain_precision: float | None, dataset: str | None, with_feedback: bool, no_cache: bool,
          search_trials: int, multi_label: bool = False, label_sep: str = ";",
          sparse_member: bool | None = None, oos_path: str | None = None, min_labels: int | None = None,
          max_labels: int | None = None) -> None:
    """Train a head on a labelled file or stored dataset, report it against TF-IDF, store it as a new version."""
    from embedclf import headops
    from embedclf.cli.data import cache_line, cached, load_training_data, run_search
    from embedclf.cli.report import echo_quality

    if not name.strip() or len(name) > 128:
        raise click.BadParameter("must be 1-128 characters", param_hint="--name")
    if sparse_member is not None and not multi_label:
        raise click.UsageError("--sparse-member/--no-sparse-member is for --multi-label")
    check_ml_options(multi_label, min_labels, max_labels, knn_member)
    if oos_path is not None and multi_label:
        raise click.UsageError("--oos-data is for single-label heads (a multi-label head abstains by its thresholds)")
    data, n_feedback = load_training_data(settings, data_path, dataset, with_feedback, name, text_col, label_col)
    oos_texts = None
    if oos_path is not None:
        from embedclf.data import load_texts

        oos_texts = [t for _, t in load_texts(oos_path, text_col) if isinstance(t, str)]
        headops.halves(oos_texts, seed)  # too few fail here, before the model loads
    if multi_label:
        from embedclf.cli.multilabel import train_ml

        if abstain_precision is not None or search_trials:
            raise click.UsageError("--multi-label heads abstain by their per-label thresholds; "
                                   "--abstain-precision and --search-trials do not apply")
        return train_ml(settings, name, data, n_feedback, dataset, label_sep, embedder_spec, test_size, epochs, seed,
                        linear_member, activate, plots_dir, as_json, no_cache, sparse_member, (min_labels, max_labels))
    engine = require_database(settings)
    keep, _ = headops.split(data.labels, test_size, seed)  # bad labels fail here, before the model loads
    embedder = cached(settings, load_embedder_verbose(settings, embedder_spec, quiet=as_json), no_cache, as_json)
    params = params_from(epochs, seed, linear_member, tfidf_member, member_weights, refit, knn_member)
    search_info = None
    if search_trials:  # searched on the training part only: the held-out split stays unseen
        params, search_info = run_search(embedder, [data.texts[i] for i in keep], [data.labels[i] for i in keep],
                                         params, search_trials, as_json)
    on_epoch, bar = epoch_progress(as_json, params.epochs)
    trained = headops.train_version(
        engine, embedder, name, data.texts, data.labels, params, test_size=test_size,
        abstain_precision=abstain_precision, activate=activate, data_fingerprint=data.fingerprint(),
        extra_summary={"skipped_rows": data.skipped, "dataset": dataset, "n_feedback": n_feedback},
        extra_train_params={"search": search_info} if search_info else None,
        on_epoch=on_epoch, embed_progress=embed_progress(as_json), oos_texts=oos_texts)
    bar.close()
    ev, version, summary = trained.evaluation, trained.version, trained.summary
    summary["embedding_cache"] = {"cached": embedder.hits, "embedded": embedder.embedded}
    if plots_dir:
        summary["plots"] = _plots(ev, Path(plots_dir), name, version)
    if as_json:
        echo_json(summary)
        return
    print_report(summary)
    echo_quality(summary, ev.report)
    if data.skipped:
        click.echo(f"  skipped {data.skipped} rows with an empty text or label")
    click.echo(f"  {cache_line(embedder)}" + (f"; {n_feedback} feedback examples" if with_feedback else ""))
    click.echo(f"stored head {name!r} version {version}" + (" (active)" if activate else " (not active)"))
    for p in summary.get("plots", []):
        click.echo(f"  plot: {p}")


def _plots(ev, out: Path, name: str, version: int) -> list[str]:
    from embedclf.cli.report import report_stem, write_report  # report.json + report.md + PNGs

    return write_report(out, f"head {name} v{version}", ev.summary(), ev.report, stem=report_stem(name, version))


@heads.command(name="list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of versions (dates in ISO 8601).")
@click.pass_obj
def list_(settings: Settings, name: str | None, as_json: bool) -> None:
    """List head versions."""
    from embedclf.store import repository

    engine = require_database(settings)
    rows = repository.list_heads(engine, name)
    if not rows and name is not None:
        raise repository.missing_head(name, repository.head_names(engine))
    if as_json:
        echo_json([{"name": r.name, "version": r.version, "active": r.is_active, "embedder_id": r.embedder_id,
                    "labels": len(r.labels), "accuracy": r.metrics.get("accuracy"),
                    "macro_f1": r.metrics.get("macro_f1"), "score": _list_score(r.metrics)[1],
                    "score_metric": _list_score(r.metrics)[0],
                    "created_at": r.created_at}
                   for r in rows])
        return
    if not rows:
        click.echo("no heads yet: train one with `embedclf heads train --name NAME --data FILE`")
        return
    click.echo(f"{'name':<20}{'ver':>4}  {'active':<7}{'labels':>7}  {'held-out score':<17}{'embedder':<34}created")
    for r in rows:
        kind, value = _list_score(r.metrics)
        score = f"{kind} {value:.4f}" if value is not None else "-"
        click.echo(f"{r.name:<20}{r.version:>4}  {'*' if r.is_active else '':<7}{len(r.labels):>7}"
                   f"  {score:<17}{r.embedder_id:<34}{r.created_at:%Y-%m-%d %H:%M}")


def _list_score(metrics: dict) -> tuple[str, float | None]:
    """The figure ``heads list`` shows for a version: accuracy, or macro-F1 for a multi-label head."""
    from embedclf.heads.mldecide import HEAD_TYPE

    if metrics.get("head_type") == HEAD_TYPE:
        value = metrics.get("macro_f1")
        return "macro-F1", float(value) if isinstance(value, (int, float)) else None
    value = metrics.get("accuracy")
    return "acc", float(value) if isinstance(value, (int, float)) else None


@heads.command()
@click.argument("name")
@click.argument("version", required=False, type=int)
@click.pass_obj
def show(settings: Settings, name: str, version: int | None) -> None:
    """Show a head version (default: the active one) as JSON."""
    from embedclf.store import repository

    meta, artifact = repository.load_head(require_database(settings), name, version)
    echo_json({"name": meta.name, "version": meta.version, "active": meta.is_active, "embedder_id": meta.embedder_id,
               "labels": meta.labels, "config": artifact.config.to_dict(), "train_params": artifact.train_params,
               "metrics": meta.metrics, "created_at": meta.created_at, "created_by": meta.created_by})


@heads.command(name="activate")
@click.argument("name")
@click.argument("version", type=int)
@click.pass_obj
def activate_(settings: Settings, name: str, version: int) -> None:
    """Make VERSION the active version of NAME (workers switch within EMBEDCLF_HEAD_REFRESH_S)."""
    from embedclf.store import repository

    repository.activate(require_database(settings), name, version, by=getpass.getuser())
    click.echo(f"head {name!r} version {version} is active")


@heads.command()
@click.argument("name")
@click.pass_obj
def rollback(settings: Settings, name: str) -> None:
    """Re-activate the version that was active before the current one."""
    from embedclf.store import repository

    version = repository.rollback(require_database(settings), name, by=getpass.getuser())
    click.echo(f"head {name!r} rolled back to version {version}")


@heads.command(name="delete")
@click.argument("name")
@click.argument("version", type=int)
@click.pass_obj
def delete_(settings: Settings, name: str, version: int) -> None:
    """Delete an inactive VERSION of NAME (the active version is refused)."""
    from embedclf.store import repository

    repository.delete_version(require_database(settings), name, version)
    click.echo(f"deleted head {name!r} version {version}")
