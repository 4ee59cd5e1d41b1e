"""Embed + default (hybrid) head per batch, with the TF-IDF member's work serial or overlapped, interleaved.

    python scripts/head_overlap_ab.py --data ../shared/datasets/banking77/train.csv --label-col category \\
        -n 3000 --rounds 5

What a worker's batch thread does per batch, without the queue: ``embed`` embeds only (the raw
speed); ``serial`` embeds, then runs the head (TF-IDF features and all members) on this thread;
``overlap`` starts the head's TF-IDF logits on a second thread, embeds meanwhile, then runs the
dense members (what workers do, ``classify_requests(text_pool=...)``). The embedder is loaded as a
worker loads it (``server=True``); the head is trained on the first 2,000 texts (every 5th text) as
``heads train`` would make it. Modes run in turn each round, so drift on a shared machine hits all
alike. Prints texts/s per round and each mode's mean relative to ``embed``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from embedclf.classify import torch_threads
from embedclf.data import load_labeled
from embedclf.embedders.spec import load_embedder
from embedclf.training.trainer import TrainParams, train_head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--label-col", default="label")
    ap.add_argument("--embedder", default="minilm-int8")
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    data = load_labeled(args.data, label_col=args.label_col)
    texts, labels = list(data.texts), list(data.labels)
    emb = load_embedder(args.embedder, server=True)
    head_texts, head_labels = texts[::5][:2000], labels[::5][:2000]
    head = train_head(emb.embed(head_texts), head_labels, TrainParams(tfidf_member=True), texts=head_texts).head
    texts = texts[: args.n]
    batches = [texts[i:i + args.batch_size] for i in range(0, len(texts), args.batch_size)]
    pool = ThreadPoolExecutor(1)

    def embed(b):
        emb.embed_batch(b)

    def serial(b):
        v = emb.embed_batch(b)
        with torch_threads(1):
            head.predict_proba(v, b)

    def overlap(b):
        fut = pool.submit(head.sparse_logits, b)
        v = emb.embed_batch(b)
        with torch_threads(1):
            head.predict_proba(v, sparse=fut.result())

    modes = {"embed": embed, "serial": serial, "overlap": overlap}
    for f in modes.values():
        f(batches[0])  # warm-up
    speed: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for name, f in modes.items():
            t0 = time.perf_counter()
            for b in batches:
                f(b)
            speed[name].append(round(len(texts) / (time.perf_counter() - t0), 1))
    ref = statistics.mean(speed["embed"])
    out = {m: {"texts_per_s": s, "mean": round(statistics.mean(s), 1), "vs_embed": round(statistics.mean(s) / ref, 3),
               "paired_vs_embed": [round(a / b, 3) for a, b in zip(s, speed["embed"])]} for m, s in speed.items()}
    print(json.dumps({"n": len(texts), "batch_size": args.batch_size, "rounds": args.rounds,
                      "embedder": emb.model_id, "modes": out}, indent=1))


if __name__ == "__main__":
    main()
