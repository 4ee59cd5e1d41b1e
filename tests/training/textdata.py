"""Synthetic keyword text classification data shared by the training tests."""

from __future__ import annotations

import random

TOPICS = {
    "billing": "invoice refund charge payment card subscription price receipt billing overcharged",
    "bug": "crash error exception freeze broken stacktrace fails glitch bug traceback",
    "shipping": "parcel delivery courier tracking shipment package delayed warehouse dispatch address",
    "account": "password login username signin locked reset email verification profile twofactor",
    "feature": "suggestion request idea roadmap would love improvement wishlist enhancement proposal",
}
FILLER = "the a my please help with about this today hello thanks again we i is it and".split()


def make_texts(n_per_class: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for label, vocab in TOPICS.items():
        words = vocab.split()
        for _ in range(n_per_class):
            body = rng.sample(words, 3) + rng.sample(FILLER, 4)
            rng.shuffle(body)
            texts.append(" ".join(body))
            labels.append(label)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order]
