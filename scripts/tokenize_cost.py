"""CPU a text of tokenizing with the ONNX embedder's tokenizer alone against from known words (chunkids.py).

Text after text, as a worker's receive thread tokenizes: the tokenizer's own ``encode``, then the words
cache from an empty dict (a cold start: it learns as it goes), then the same texts again (warm). Checks
that every text gets the same ids both ways. Prints one JSON object.

    python scripts/tokenize_cost.py --data ../shared/datasets/banking77/test.csv
    python scripts/tokenize_cost.py --data ../shared/datasets/goemotions/train.csv
"""

from __future__ import annotations

import argparse
import json
import time

from embedclf.data import load_texts
from embedclf.embedders.chunkids import ChunkIds, Chunks
from embedclf.embedders.spec import load_embedder


def cpu_us(fn, texts) -> tuple[float, list]:
    t0 = time.process_time()
    out = [fn(t) for t in texts]
    return 1e6 * (time.process_time() - t0) / max(1, len(texts)), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--embedder", default="minilm-int8")
    a = ap.parse_args()
    texts = [t for _, t in load_texts(a.data, a.text_col)]
    emb = load_embedder(a.embedder)
    try:
        tok = emb._new_tokenizer()
        ids = ChunkIds(emb._new_tokenizer(), Chunks())
        plain, want = cpu_us(lambda t: tok.encode(t).ids, texts)
        cold, got_cold = cpu_us(ids.ids, texts)
        cold_hits = ids.hits
        warm, got_warm = cpu_us(ids.ids, texts)
    finally:
        emb.close()
    print(json.dumps({
        "data": a.data, "texts": len(texts), "cache_enabled": ids.enabled,
        "tokenizer_us_per_text": round(plain, 1), "cold_us_per_text": round(cold, 1),
        "warm_us_per_text": round(warm, 1), "cold_hit_rate": round(cold_hits / max(1, len(texts)), 3),
        "words_kept": len(ids.chunks), "same_ids": got_cold == want and got_warm == want,
    }, indent=2))


if __name__ == "__main__":
    main()
