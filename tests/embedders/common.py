"""Texts and helpers shared by the embedder tests."""

from __future__ import annotations

import numpy as np

TEXTS = [
    "I lost my card",
    "How do I reset my PIN?",
    "What is the exchange rate for euros?",
    "My transfer has not arrived yet",
    "Can I top up with Apple Pay?",
    "Why was my card payment declined at the supermarket this morning?",
    "a",
    "The weather is nice today",
]


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
