"""What the kNN member adds to a head's per-text cost, on a full-size head (not ``bench e2e``'s 2,000-text one).

Trains ``heads train``'s default dense stage once on a labelled file (cached embeddings), finishes it
with and without the kNN member, and times ``predict_proba`` per text on one torch thread in batches
(as workers run heads), for the float32 search (torch's and ONNX Runtime's) and, where this CPU has fast
bfloat16 products, the bfloat16 candidate search; the paths alternate for ``--rounds`` rounds and each
one's best is printed. Prints one JSON object.

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
from embedclf.heads import knn, nearest
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
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; each path's best is printed")
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
                 "bf16_faster_here": knn.use_bf16(), "ort_faster_here": nearest.use_ort()}
    texts, Xs = d.texts[: a.n], X[: a.n]
    without = finish_head(stage, replace(params, knn_member="off")).head
    with_knn = finish_head(stage, replace(params, knn_member="on")).head
    # (name, head, bfloat16 candidates, ONNX Runtime's float32 search): every path this CPU can run
    paths = [("without_knn", without, False, False), ("with_knn_f32_torch", with_knn, False, False),
             ("with_knn_f32_ort", with_knn, False, True)] + (
        [("with_knn_bf16", with_knn, True, False)] if knn.use_bf16() else [])
    best: dict[str, float] = {}
    for _ in range(a.rounds):  # the paths alternate, so a slow spell of a shared host hits them alike
        for name, head, fast, ort in paths:
            knn._bf16, nearest._ort = fast, ort
            if head.knn is not None:
                head.knn._table = None  # rebuild the search for this path
            cost = head_cost_us(head, Xs, texts, a.batch_size)
            best[name] = min(best.get(name, float("inf")), cost)
    out.update({f"head_us_per_text_{name}": round(v, 1) for name, v in best.items()})
    out["knn_vectors"] = int(with_knn.knn.vectors.shape[0]) if with_knn.knn is not None else 0
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
