"""``embedclf heads zeroshot``: a head from label names/descriptions alone, before any labelled data."""

from __future__ import annotations

import getpass
import hashlib
import json
from pathlib import Path

import click

from embedclf.cli.base import AppError
from embedclf.cli.common import echo_json, embed_progress, embedder_option, load_embedder_verbose
from embedclf.config import Settings


def read_label_specs(path: str, label_col: str, description_col: str) -> list:
    """Distinct labels (first-seen order) with their description when the file has one.

    The file may be a plain label list (``label[,description]`` CSV/TSV/JSON/JSONL, or TXT with
    one label per line) or any labelled data file (other columns, e.g. ``text``, are ignored).
    """
    from embedclf.data import DataError, _records  # one reader for every file format the CLI accepts
    from embedclf.heads.zeroshot import LabelSpec

    descriptions: dict[str, str] = {}
    for n, rec in enumerate(_records(Path(path)), 1):
        if path.lower().endswith(".txt"):
            rec = {label_col: rec["text"]}
        if label_col not in rec:
            raise DataError(f"{path}: no column {label_col!r} (columns: {', '.join(map(str, rec)) or 'none'})")
        label = rec[label_col]
        if label is None or str(label).strip() == "":
            raise DataError(f"{path}: row {n} has an empty label")
        label = str(label).strip()
        desc = rec.get(description_col)
        desc = str(desc).strip() if desc is not None else ""
        if label not in descriptions or (desc and not descriptions[label]):
            descriptions[label] = desc
    specs = [LabelSpec.of(label, desc) for label, desc in descriptions.items()]
    if not specs:
        raise DataError(f"{path}: no labels")
    return specs


def load_eval(path: str, text_col: str, label_col: str, labels: list[str]):
    """The labelled --eval file; every label in it must be one of the head's."""
    from embedclf.data import load_labeled

    data = load_labeled(path, text_col, label_col)
    unknown = sorted(set(data.labels) - set(labels))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        raise AppError(f"{len(unknown)} label(s) of {path} are not among the head's labels: {shown}")
    return data


def evaluate_zeroshot(head, labels: list[str], embedder, data, quiet: bool) -> dict:
    """Accuracy, macro-F1, MAP@3, top-3 accuracy and log-loss of the head on labelled data."""
    import numpy as np

    from embedclf.training.metrics import classification_report

    index = {label: i for i, label in enumerate(labels)}
    X = embedder.embed(data.texts, embed_progress(quiet)(len(data.texts)))
    report = classification_report(head.predict_proba(X), np.asarray([index[y] for y in data.labels]))
    return {**{k: round(v, 4) for k, v in report.items()}, "n_test": len(data.texts)}


@click.command()
@click.argument("name")
@click.option("--labels", "labels_path", required=True, type=click.Path(dir_okay=False),
              help="Labels file: label[,description] (CSV/TSV/JSON/JSONL/TXT), or any labelled data file.")
@click.option("--label-col", default="label", show_default=True, help="Label column (labels and --eval file).")
@click.option("--description-col", default="description", show_default=True,
              help="Description column, used when present; else the label name is embedded "
                   "(card_arrival -> card arrival).")
@embedder_option
@click.option("--temperature", default=None, type=click.FloatRange(1e-4, 100.0),
              help="Softmax temperature over cosines (default 0.05).")
@click.option("--activate", is_flag=True, help="Make this version active (workers serve it within seconds).")
@click.option("--eval", "eval_path", type=click.Path(dir_okay=False),
              help="Labelled file to measure the head on (accuracy, macro-F1, MAP@3); stored with the version.")
@click.option("--text-col", default="text", show_default=True, help="Text column of the --eval file.")
@click.option("--no-store", is_flag=True, help="Build (and evaluate) only; store nothing, needs no database.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def zeroshot(settings: Settings, name: str, labels_path: str, label_col: str, description_col: str,
             embedder_spec: str | None, temperature: float | None, activate: bool, eval_path: str | None,
             text_col: str, no_store: bool, as_json: bool) -> None:
    """Build head NAME from label names/descriptions alone (cosine to their embeddings), store it as a version."""
    from embedclf.heads.zeroshot import DEFAULT_TEMPERATURE, build_zeroshot, check_labels

    if not name.strip() or len(name) > 128:
        raise click.BadParameter("must be 1-128 characters", param_hint="NAME")
    if no_store and activate:
        raise click.BadParameter("--activate stores a version; drop --no-store", param_hint="--activate")
    specs = read_label_specs(labels_path, label_col, description_col)
    check_labels(specs)  # before any model is loaded
    eval_data = load_eval(eval_path, text_col, label_col, [x.label for x in specs]) if eval_path else None
    engine = None
    if not no_store:
        from embedclf.cli.db import require_database

        engine = require_database(settings)  # fail before loading a model
    embedder = load_embedder_verbose(settings, embedder_spec, quiet=as_json)
    artifact = build_zeroshot(embedder, specs, DEFAULT_TEMPERATURE if temperature is None else temperature)
    summary: dict = {"head": name, "kind": "zeroshot", "n_labels": len(specs), "embedder": embedder.model_id,
                     "temperature": artifact.train_params["temperature"],
                     "described_labels": sum(s.described for s in specs)}
    if eval_data is not None:
        metrics = evaluate_zeroshot(artifact.build(), artifact.labels, embedder, eval_data, as_json)
        artifact.metrics = {**metrics, "kind": "zeroshot", "eval_file": str(eval_path)}
        summary.update(metrics, eval_file=str(eval_path))
    if engine is not None:
        from embedclf.store import repository

        fingerprint = hashlib.sha256(json.dumps(artifact.train_params["label_texts"], sort_keys=True)
                                     .encode("utf-8", "surrogatepass")).hexdigest()
        summary["version"] = repository.add_head_version(
            engine, name, artifact, activate=activate, created_by=getpass.getuser(), data_fingerprint=fingerprint,
            n_train=0)
        summary["active"] = activate
    if as_json:
        echo_json(summary)
        return
    click.echo(f"zero-shot head {name!r}: {len(specs)} labels, embedder {embedder.model_id}, "
               f"temperature {summary['temperature']}")
    if eval_path:
        click.echo(f"  on {summary['n_test']} texts of {eval_path}: accuracy {summary['accuracy']:.4f}, "
                   f"macro-F1 {summary['macro_f1']:.4f}, MAP@3 {summary['map3']:.4f}, "
                   f"top-3 accuracy {summary['top3_accuracy']:.4f}")
    if engine is not None:
        click.echo(f"stored head {name!r} version {summary['version']}"
                   + (" (active)" if activate else " (not active; `embedclf heads activate` to serve it)"))
