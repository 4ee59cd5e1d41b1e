"""``embedclf evaluate``: train on one file, test on another (or a CLINC150-style JSON), store nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from embedclf.cli.base import AppError
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
from embedclf.cli.data import no_cache_option
from embedclf.cli.multilabel import check_ml_options, multilabel_options
from embedclf.config import Settings

CLINC_SPLITS = ("train", "val", "test", "oos_train", "oos_val", "oos_test")


def load_clinc(path: str | Path) -> dict[str, tuple[list[str], list[str]]]:
    """A CLINC150 ``data_full.json``-style file: {split: [[text, label], ...]} for the six splits.

    ``train``/``val``/``test`` hold in-scope texts; ``oos_*`` the out-of-scope ones.
    """
    from embedclf.data import DataError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: not a JSON file ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{p}: expected a JSON object with the splits {', '.join(CLINC_SPLITS)}")
    missing = [s for s in CLINC_SPLITS if s not in raw]
    if missing:
        raise DataError(f"{p}: missing split(s) {', '.join(missing)} (CLINC150 layout: {', '.join(CLINC_SPLITS)})")
    out = {}
    for split in CLINC_SPLITS:
        pairs = raw[split]
        ok = isinstance(pairs, list) and all(
            isinstance(x, list) and len(x) == 2 and all(isinstance(v, str) for v in x) for x in pairs)
        if not ok:
            raise DataError(f"{p}: split {split!r} must be a list of [text, label] pairs")
        kept = [(t, y) for t, y in pairs if t.strip() and y.strip()]
        out[split] = ([t for t, _ in kept], [y for _, y in kept])
    for split in ("train", "val", "test"):
        if not out[split][0]:
            raise DataError(f"{p}: split {split!r} is empty")
    return out


@click.command()
@click.option("--train", "train_path", type=click.Path(dir_okay=False), help="Training file.")
@click.option("--test", "test_path", type=click.Path(dir_okay=False), help="Test file.")
@click.option("--data", "clinc_path", type=click.Path(dir_okay=False),
              help="Instead of --train/--test: a CLINC150-layout JSON (train/val/test + oos_train/oos_val/oos_test).")
@embedder_option
@columns_options
@train_options
@no_cache_option
@click.option("--abstain-precision", type=click.FloatRange(0.01, 1.0), default=None,
              help="Let the head abstain below the confidence at which validation answers reach this precision "
                   "(with --data the out-of-scope validation texts choose the threshold instead).")
@click.option("--max-in-scope-loss", type=click.FloatRange(0.0, 1.0), default=None,
              help="With --data: in-scope validation accuracy (a fraction) the out-of-scope threshold may cost "
                   "[default: 0.005].")
@click.option("--oos-beta", type=click.FloatRange(0.0, 100.0), default=None,
              help="With --data: the threshold applies to the top probability x exp(-beta (1 - mean cosine to the "
                   "10 nearest in-scope training texts)); 0 = the top probability alone [default: 3].")
@click.option("--oos-class/--no-oos-class", default=True, show_default=True,
              help="With --data: also train the out-of-scope training texts as a class (predicting it = abstaining).")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False),
              help="Write evaluate-report.json, -report.md and the -training, -confusion and -reliability PNGs "
                   "here (no head is stored, so no name and version).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (no progress bars).")
@multilabel_options
@click.option("--val", "val_path", type=click.Path(dir_okay=False),
              help="With --multi-label: a validation file for the thresholds (default: a tenth of --train).")
@click.pass_obj
def evaluate(settings: Settings, train_path: str | None, test_path: str | None, clinc_path: str | None,
             embedder_spec: str | None, text_col: str, label_col: str, epochs: int | None, seed: int,
             linear_member: bool, tfidf_member: bool, member_weights: str, refit: bool, knn_member: str,
             abstain_precision: float | None, max_in_scope_loss: float | None, oos_beta: float | None,
             oos_class: bool, plots_dir: str | None, as_json: bool,
             no_cache: bool, multi_label: bool = False, label_sep: str = ";", val_path: str | None = None,
             sparse_member: bool | None = None, min_labels: int | None = None,
             max_labels: int | None = None) -> None:
    """Train a head on TRAIN, score it on TEST next to a TF-IDF + linear baseline."""
    from embedclf.cli.data import cache_line, cached
    from embedclf.cli.report import echo_quality, write_report
    from embedclf.data import load_labeled
    from embedclf.training.evaluate import Abstention, evaluate_head

    if clinc_path and (train_path or test_path):
        raise click.UsageError("use either --data (CLINC150 layout) or --train and --test, not both")
    if not clinc_path and not (train_path and test_path):
        raise click.UsageError("give --train and --test, or --data with a CLINC150-layout JSON")
    if (max_in_scope_loss is not None or oos_beta is not None) and not clinc_path:
        raise click.UsageError("--max-in-scope-loss / --oos-beta needs out-of-scope validation texts (--data)")
    check_ml_options(multi_label, min_labels, max_labels, knn_member)
    if (val_path or sparse_member is not None) and not multi_label:
        raise click.UsageError("--val and --sparse-member/--no-sparse-member are for --multi-label")
    if multi_label:
        from embedclf.cli.multilabel import evaluate_ml

        if clinc_path or abstain_precision is not None or train_path is None or test_path is None:
            raise click.UsageError("--multi-label takes --train/--test (no --data, no --abstain-precision)")
        return evaluate_ml(settings, train_path, test_path, val_path, label_sep, embedder_spec, text_col, label_col,
                           epochs, seed, linear_member, plots_dir, as_json, no_cache, sparse_member,
                           (min_labels, max_labels))
    val, abstention = None, None
    if clinc_path:
        d = load_clinc(clinc_path)
        (train_texts, train_labels), (test_texts, test_labels) = d["train"], d["test"]
        val = d["val"]
        oos_labels = sorted(set(d["oos_train"][1] + d["oos_val"][1] + d["oos_test"][1]))
        abstention = Abstention(
            target_precision=abstain_precision or 0.95,
            oos_train=d["oos_train"][0], oos_val=d["oos_val"][0], oos_test=d["oos_test"][0],
            oos_label=(oos_labels[0] if len(oos_labels) == 1 else "oos") if oos_class else None,
        )
        if max_in_scope_loss is not None:
            abstention = dataclasses.replace(abstention, max_accuracy_loss=max_in_scope_loss)
        if oos_beta is not None:
            abstention = dataclasses.replace(abstention, oos_beta=oos_beta)
        source = str(clinc_path)
    else:
        assert train_path is not None and test_path is not None  # checked above
        train = load_labeled(train_path, text_col, label_col)
        test = load_labeled(test_path, text_col, label_col)
        unseen = sorted(set(test.labels) - set(train.labels))
        if unseen:
            shown = ", ".join(repr(u) for u in unseen[:5])
            raise AppError(f"{len(unseen)} test label(s) never appear in training: {shown}")
        train_texts, train_labels, test_texts, test_labels = train.texts, train.labels, test.texts, test.labels
        if abstain_precision is not None:
            abstention = Abstention(target_precision=abstain_precision)
        source = f"{train_path} -> {test_path}"
    embedder = cached(settings, load_embedder_verbose(settings, embedder_spec, quiet=as_json), no_cache, as_json)
    params = params_from(epochs, seed, linear_member, tfidf_member, member_weights, refit, knn_member)
    on_epoch, bar = epoch_progress(as_json, params.epochs)
    ev = evaluate_head(embedder, train_texts, train_labels, test_texts, test_labels, params,
                       embed_progress=embed_progress(as_json), on_epoch=on_epoch, val=val, abstention=abstention)
    bar.close()
    summary = ev.summary()
    summary["embedding_cache"] = {"cached": embedder.hits, "embedded": embedder.embedded}
    if plots_dir:
        summary["plots"] = write_report(Path(plots_dir), f"evaluate {source}", ev.summary(), ev.report,
                                        stem="evaluate")
    if as_json:
        echo_json(summary)
    else:
        print_report(summary)
        echo_quality(summary, ev.report)
        click.echo(f"  {cache_line(embedder)}")
        for p in summary.get("plots", []):
            click.echo(f"  wrote {p}")
