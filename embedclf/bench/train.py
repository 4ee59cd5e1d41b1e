"""``bench train``: embed once, then time ``train_head`` on the cached embeddings."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from embedclf.bench.stats import rate
from embedclf.embedders.base import Embedder
from embedclf.progress import bar as progress_bar

if TYPE_CHECKING:
    from embedclf.training.trainer import TrainParams


def run_train(embedder: Embedder, texts: Sequence[str], labels: Sequence[str], params: TrainParams,
              quiet: bool) -> dict:
    """Embed, then train ``params``' head (``heads train``'s default recipe from the CLI: the hybrid head)."""
    from embedclf.training.trainer import train_head

    with progress_bar(total=len(texts), desc="embedding", unit="text", file=sys.stderr, disable=quiet,
              dynamic_ncols=True) as bar:
        start = time.perf_counter()
        X = embedder.embed(texts, progress=bar.update)  # length-sorted batches, as `heads train` does
        embed_s = time.perf_counter() - start
    with progress_bar(total=params.epochs, desc="training", unit="epoch", file=sys.stderr, disable=quiet,
              dynamic_ncols=True) as bar:
        start = time.perf_counter()
        result = train_head(X, labels, params, on_epoch=lambda *_: bar.update(1), texts=texts)
        train_s = time.perf_counter() - start
    epochs_run = len(result.history)
    return {
        "n": len(texts),
        "n_labels": len(result.labels),
        "dim": int(X.shape[1]),
        "embedder": embedder.model_id,
        "embed_seconds": round(embed_s, 3),
        "embed_texts_per_s": round(rate(len(texts), embed_s), 2),
        "train_seconds": round(train_s, 3),
        "epochs_max": params.epochs,
        "epochs_run": epochs_run,
        "seconds_per_epoch": round(train_s / max(1, epochs_run), 4),
        "best_epoch": result.best_epoch,
        "val_accuracy": round(float(result.val_metrics.get("accuracy", float("nan"))), 4),
        "head": head_recipe(params), "members": sorted(result.members),
    }


def head_recipe(params: TrainParams) -> str:
    """A short name of the head ``params`` train, for reports."""
    members = ["mlp"] + ["linear"] * params.linear_member + ["tfidf"] * params.tfidf_member
    extra = [f"weights {params.member_weights}"] * params.tfidf_member + ["refit"] * params.refit
    return "+".join(members) + (f" ({', '.join(extra)})" if extra else "")


def run_train_cached(embedder: Embedder, texts: Sequence[str], labels: Sequence[str], params: TrainParams,
                     quiet: bool, engine) -> dict:
    """Two trainings through the Postgres cache on an empty database (``engine``).

    First: import the examples as a dataset, embed them and store the vectors, train. Second, the
    retrain: read the dataset and its vectors back from Postgres (the model embeds nothing), train.
    """
    from embedclf.store.datasets import fetch_examples, import_examples
    from embedclf.store.embcache import CachedEmbedder
    from embedclf.training.trainer import train_head

    runs = {}
    for run in ("first", "second"):
        start = time.perf_counter()
        if run == "first":
            import_examples(engine, "bench", list(texts), list(labels))
        run_texts, run_labels = fetch_examples(engine, "bench")
        data_s = time.perf_counter() - start
        cached = CachedEmbedder(embedder, engine)  # a fresh object: nothing in memory
        with progress_bar(total=len(run_texts), desc=f"{run}: embedding", unit="text", file=sys.stderr, disable=quiet,
                  dynamic_ncols=True) as bar:
            start = time.perf_counter()
            X = cached.embed(run_texts, progress=bar.update)
            embed_s = time.perf_counter() - start
        with progress_bar(total=params.epochs, desc=f"{run}: training", unit="epoch", file=sys.stderr, disable=quiet,
                  dynamic_ncols=True) as bar:
            start = time.perf_counter()
            result = train_head(X, run_labels, params, on_epoch=lambda *_: bar.update(1), texts=run_texts)
            train_s = time.perf_counter() - start
        runs[run] = {
            "n": len(run_texts), "embedded": cached.embedded, "cached": cached.hits,
            "dataset_seconds": round(data_s, 3), "embed_seconds": round(embed_s, 3),
            "train_seconds": round(train_s, 3), "total_seconds": round(data_s + embed_s + train_s, 3),
            "epochs_run": len(result.history), "val_accuracy": round(float(result.val_metrics["accuracy"]), 4),
        }
    first = runs["first"]
    return {
        "n": first["n"], "n_labels": len(set(labels)), "dim": embedder.dim, "embedder": embedder.model_id,
        "epochs_max": params.epochs, "head": head_recipe(params), "first": first, "second": runs["second"],
        "retrain_seconds": runs["second"]["total_seconds"],
    }


def cached_report(r: dict, echo) -> None:
    """Print a ``bench train --cache`` report."""
    from embedclf.bench.report import machine_block

    machine_block(r["machine"], echo)
    echo(f"\n{r['n']} texts, {r['n_labels']} labels, dim {r['dim']}, embedder {r['embedder']}, head {r['head']}, "
         f"temporary database (dropped)")
    for run, what in (("first", "import + embed + store"), ("second", "retrain from the Postgres cache")):
        x = r[run]
        echo(f"  {run:<7} {what}: dataset {x['dataset_seconds']:.2f} s, vectors {x['embed_seconds']:.2f} s "
             f"({x['embedded']} embedded, {x['cached']} from cache), train {x['train_seconds']:.2f} s "
             f"({x['epochs_run']} of {r['epochs_max']} epochs, val accuracy {x['val_accuracy']}) "
             f"= {x['total_seconds']:.2f} s")
    echo(f"  retrain from cache: {r['retrain_seconds']:.2f} s")
