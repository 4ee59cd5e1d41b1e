"""Would a kNN member help the default head? 3-fold CV on a training file (never a test file).

Per fold the default hybrid head (``heads train``'s recipe: MLP + linear + TF-IDF, refit) is trained on
the other folds; its probabilities are then mixed with a cosine kNN vote over the same training
embeddings, ``p = (1 - a) * p_head + a * p_knn`` (``p_knn``: softmax-weighted votes of the ``k`` nearest
training texts, weights ``exp(cos / temp)``), and scored on the held-out fold. Same folds as
``embedclf bench heads`` (seed 123). A throwaway measurement, not a head type: nothing here is stored.

    python scripts/knn_member_cv.py --data ../shared/datasets/banking77/train.csv --label-col category
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
from sklearn.model_selection import StratifiedKFold

from embedclf.cli.common import load_embedder_verbose
from embedclf.cli.data import cached
from embedclf.config import Settings
from embedclf.data import load_labeled
from embedclf.training.trainer import TrainParams, train_head


def knn_proba(S: np.ndarray, ytr: np.ndarray, n_labels: int, k: int, temp: float) -> np.ndarray:
    top = np.argpartition(-S, k, axis=1)[:, :k]
    w = np.exp((np.take_along_axis(S, top, 1) - 1.0) / temp)
    K = np.zeros((len(S), n_labels))
    for j in range(k):
        np.add.at(K, (np.arange(len(S)), ytr[top[:, j]]), w[:, j])
    return K / K.sum(1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--label-col", default="label")
    ap.add_argument("--embedder", default="minilm-int8")
    ap.add_argument("--k", default="10,30")
    ap.add_argument("--temp", type=float, default=0.05)
    ap.add_argument("--weights", default="0.1,0.2,0.3,0.4,0.5")
    a = ap.parse_args()
    settings = Settings.from_env()
    d = load_labeled(a.data, a.text_col, a.label_col)
    texts, y = d.texts, np.asarray(d.labels)
    emb = cached(settings, load_embedder_verbose(settings, a.embedder, quiet=True), False, True)
    try:
        X = np.asarray(emb.embed(texts, None), dtype=np.float32)
    finally:
        emb.inner.close()
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    params = replace(TrainParams(), tfidf_member=True, refit=True)
    ks, weights = [int(v) for v in a.k.split(",")], [0.0] + [float(v) for v in a.weights.split(",")]
    acc: dict[tuple[int, float], list[float]] = {}
    for fold, (tr, te) in enumerate(StratifiedKFold(3, shuffle=True, random_state=123).split(X, y)):
        r = train_head(X[tr], list(y[tr]), params, texts=[texts[i] for i in tr])
        P = r.head.predict_proba(X[te], [texts[i] for i in te])
        index = {label: i for i, label in enumerate(r.labels)}
        ytr = np.array([index[v] for v in y[tr]])
        yte = np.array([index[v] for v in y[te]])
        S = Xn[te] @ Xn[tr].T
        for k in ks:
            K = knn_proba(S, ytr, len(r.labels), k, a.temp)
            for w in weights:
                acc.setdefault((k, w), []).append(float((((1 - w) * P + w * K).argmax(1) == yte).mean()))
        print(f"fold {fold}: head alone {acc[(ks[0], 0.0)][-1]:.4f}", flush=True)
    base = np.asarray(acc[(ks[0], 0.0)])
    print(f"{'k':>4} {'weight':>6}  mean acc.  vs head alone (pt, per fold)")
    for (k, w), v in acc.items():
        diff = (np.asarray(v) - base) * 100
        print(f"{k:>4} {w:>6.2f}  {np.mean(v):.4f}     {diff.mean():+.2f} ± {diff.std(ddof=1) / np.sqrt(len(v)):.2f} "
              f"({' '.join(f'{x:+.2f}' for x in diff)})")


if __name__ == "__main__":
    main()
