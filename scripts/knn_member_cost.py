"""What the kNN member adds to a head's per-text cost, on a full-size head (not ``bench e2e``'s 2,000-text one).

Trains ``heads train``'s default dense stage once on a labelled file (cached embeddings), finishes it
with and without the kNN member, and times ``predict_proba`` per text on one torch thread in batches
(as workers run heads), for the float32 search and, where this CPU has fast bfloat16 products, the
bfloat16 candidate search. Prints one JSON object.

    python scripts/knn_member_cost.py --data ../shared/datasets/banking77/train.csv --label-col category
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from embedclf.bench.e2e import head_cost_us
from embedclf.cli.common import load_embedder_verbose, params_from
from embedclf.cli.data import cached
from embedclf.config import Settings
from embedclf.data import load_labeled
from embedclf.heads import knn
from embedclf.training.finish import finish_head
from embedclf.training.trainer import train_dense


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--label-col", default="label")
    ap.add_argument("--embedder", default=None)
    ap.add_argument("-n", type=int, default=2000, help="texts timed")
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args()
    settings = Settings.from_env()
    d = load_labeled(a.data, a.text_col, a.label_col)
    emb = cached(settings, load_embedder_verbose(settings, a.embedder, quiet=True), False, True)
    try:
        X = np.asarray(emb.embed(d.texts, None), dtype=np.float32)
        model_id = emb.model_id
    finally:
        emb.inner.close()
    params = params_from(None, 0)
    stage = train_dense(X, d.labels, params, texts=d.texts)
    out: dict = {"data": a.data, "embedder": model_id, "n_train": len(X), "batch_size": a.batch_size,
                 "bf16_faster_here": knn.use_bf16()}
    texts, Xs = d.texts[: a.n], X[: a.n]
    for mode in ("off", "on"):
        head = finish_head(stage, replace(params, knn_member=mode)).head
        paths = [False, True] if mode == "on" and knn.use_bf16() else [knn.use_bf16()]
        for fast in paths:
            knn._bf16 = fast
            if head.knn is not None:
                head.knn._table = None  # rebuild the search table for this path
            key = "without_knn" if mode == "off" else ("with_knn_bf16" if fast else "with_knn_f32")
            out[f"head_us_per_text_{key}"] = round(head_cost_us(head, Xs, texts, a.batch_size), 1)
        if head.knn is not None:
            out["knn_vectors"] = int(head.knn.vectors.shape[0])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
