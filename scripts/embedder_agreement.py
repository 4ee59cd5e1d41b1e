"""Cosine agreement of two embedders on the same texts (are their vectors interchangeable?).

    python scripts/embedder_agreement.py --data ../shared/datasets/banking77/train.csv minilm minilm-onnx minilm-int8

Embeds every non-empty text of the column with each spec (length-sorted batches, as training does) and
prints, for each spec after the first, the cosine to the first spec's vector: min, 0.1 % / 1 % quantiles,
mean, and how many texts fall under 0.999.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from embedclf.data import load_texts
from embedclf.embedders.spec import load_embedder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--text-col", default="text")
    ap.add_argument("specs", nargs="+", help="reference spec first")
    args = ap.parse_args()
    texts = [t for _, t in load_texts(args.data, args.text_col) if isinstance(t, str) and t.strip()]
    vectors, ids = [], []
    for spec in args.specs:
        emb = load_embedder(spec)
        vectors.append(emb.embed(texts))
        ids.append(emb.model_id)
        emb.close()
    ref = vectors[0] / np.linalg.norm(vectors[0], axis=1, keepdims=True)
    for spec, model_id, vec in zip(args.specs[1:], ids[1:], vectors[1:]):
        cos = (ref * (vec / np.linalg.norm(vec, axis=1, keepdims=True))).sum(1)
        print(json.dumps({
            "reference": args.specs[0], "spec": spec, "model_id": model_id, "n": len(texts),
            "cos_min": round(float(cos.min()), 6), "cos_q0.001": round(float(np.quantile(cos, 0.001)), 6),
            "cos_q0.01": round(float(np.quantile(cos, 0.01)), 6), "cos_mean": round(float(cos.mean()), 6),
            "below_0.999": int((cos < 0.999).sum()),
        }))


if __name__ == "__main__":
    main()
