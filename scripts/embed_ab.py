"""Raw embed speed of several specs of one model, interleaved in one process (A/B/C, A/B/C, ...).

    python scripts/embed_ab.py --data ../shared/datasets/banking77/train.csv -n 3000 --rounds 4 \\
        'minilm-int8?spin=1' 'minilm-int8?spin=0' 'minilm-int8?spin=run'

Every spec is loaded once; each round embeds the same first N texts with each spec in turn, in
consecutive ``embed_batch`` calls of ``--batch-size`` (file order, as a worker's batches come). On a
shared machine a spec's speed moves by 5-15 % from one minute to the next; interleaving the specs
round by round puts that drift on all of them alike. Prints texts/s per round and the mean, the
process's CPU use during each pass (cores), and each spec's mean relative to the first spec's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from embedclf.data import load_texts
from embedclf.embedders.spec import load_embedder


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--text-col", default="text")
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("specs", nargs="+", help="the first is the reference")
    args = ap.parse_args()
    texts = [t for _, t in load_texts(args.data, args.text_col) if isinstance(t, str) and t.strip()][: args.n]
    embedders = {spec: load_embedder(spec) for spec in args.specs}
    for emb in embedders.values():
        emb.embed_batch(texts[: args.batch_size])  # warm-up
    speed: dict[str, list[float]] = {s: [] for s in args.specs}
    cores: dict[str, list[float]] = {s: [] for s in args.specs}
    for _ in range(args.rounds):
        for spec, emb in embedders.items():
            t0, c0 = time.perf_counter(), _cpu()
            for i in range(0, len(texts), args.batch_size):
                emb.embed_batch(texts[i : i + args.batch_size])
            wall = time.perf_counter() - t0
            speed[spec].append(round(len(texts) / wall, 1))
            cores[spec].append(round((_cpu() - c0) / wall, 2))
    ref = statistics.mean(speed[args.specs[0]])
    out = {spec: {"texts_per_s": speed[spec], "mean": round(statistics.mean(speed[spec]), 1),
                  "vs_first": round(statistics.mean(speed[spec]) / ref, 3), "cores": cores[spec]}
           for spec in args.specs}
    print(json.dumps({"n": len(texts), "batch_size": args.batch_size, "rounds": args.rounds, "specs": out}, indent=1))


if __name__ == "__main__":
    main()
