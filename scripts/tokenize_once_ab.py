"""A/B: the batch thread's ``embed_batch`` time with the texts' token ids already in the memo (as a worker's
receive thread leaves them) against tokenizing inside ``embed_batch`` (as before), modes interleaved.

    python scripts/tokenize_once_ab.py --data ../shared/datasets/banking77/train.csv --label-col category \\
        -n 3200 --rounds 5 [--embedder minilm-int8]

Prints per round the seconds of each mode and their ratio (memo / no memo); only ``embed_batch`` is timed,
the counting happens before (on a worker it runs on the receive thread, overlapping the previous batch).
"""

from __future__ import annotations

import argparse
import statistics
import time

from embedclf.config import Settings
from embedclf.data import load_labeled
from embedclf.embedders.spec import load_embedder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--label-col", default="label")
    ap.add_argument("-n", type=int, default=3200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--embedder", default="minilm-int8")
    a = ap.parse_args()
    texts = load_labeled(a.data, a.text_col, a.label_col).texts[: a.n]
    emb = load_embedder(a.embedder, model_dir=Settings.from_env().model_dir)
    counter = emb.token_counter()
    chunks = [texts[i : i + a.batch_size] for i in range(0, len(texts), a.batch_size)]
    emb.embed_batch(chunks[0])  # warm-up
    ratios = []
    for r in range(a.rounds):
        t0 = time.perf_counter()
        for c in chunks:
            emb.embed_batch(c)
        plain = time.perf_counter() - t0
        spent = 0.0
        for c in chunks:
            for t in c:
                counter(t)
            t0 = time.perf_counter()
            emb.embed_batch(c)
            spent += time.perf_counter() - t0
        ratios.append(spent / plain)
        print(f"round {r + 1}: tokenizing in embed_batch {plain:.3f} s, ids from the memo {spent:.3f} s, "
              f"ratio {ratios[-1]:.4f}", flush=True)
    print(f"median ratio {statistics.median(ratios):.4f} over {a.rounds} rounds, {len(texts)} texts, "
          f"batches of {a.batch_size}, {a.embedder}")


if __name__ == "__main__":
    main()
