"""Texts and helpers shared by the embedder tests."""

from __future__ import annotations

import threading
from collections.abc import Callable

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


def count_while_embedding(counter: Callable[[str], int], text: str, embed: Callable[[], object],
                          times: int = 200, embeds: int = 5) -> tuple[list[int], list[BaseException]]:
    """A worker's receive thread counts tokens while its batch thread embeds: ``counter(text)`` ``times``
    times on another thread while ``embed()`` runs ``embeds`` times here; the counts and any errors."""
    counts: list[int] = []
    errors: list[BaseException] = []

    def count() -> None:
        try:
            for _ in range(times):
                counts.append(counter(text))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    th = threading.Thread(target=count)
    th.start()
    for _ in range(embeds):
        embed()
    th.join()
    return counts, errors
