"""``bench train``: embed once, then time ``train_head`` on the cached embeddings."""

from __future__ import annotations

import sys
import time
from typing import Sequence

from tqdm import tqdm

from embedclf.bench.stats import rate
from embedclf.embedders.base import Embedder


def run_train(embedder: Embedder, texts: Sequence[str], labels: Sequence[str], epochs: int | None,
              quiet: bool) -> dict:
    from embedclf.training.trainer import TrainParams, train_head

    params = TrainParams() if epochs is None else TrainParams(epochs=epochs)
    with tqdm(total=len(texts), desc="embedding", unit="text", file=sys.stderr, disable=quiet,
              dynamic_ncols=True) as bar:
        start = time.perf_counter()
        X = embedder.embed(texts, progress=bar.update)  # length-sorted batches, as `heads train` does
        embed_s = time.perf_counter() - start
    with tqdm(total=params.epochs, desc="training", unit="epoch", file=sys.stderr, disable=quiet,
              dynamic_ncols=True) as bar:
        start = time.perf_counter()
        result = train_head(X, labels, params, on_epoch=lambda *_: bar.update(1))
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
    }
