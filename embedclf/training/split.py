"""Label encoding and stratified splits (numpy only, seeded)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedclf.errors import DataError


@dataclass(frozen=True)
class LabelEncoder:
    labels: tuple[str, ...]

    @classmethod
    def fit(cls, values: Sequence[str]) -> LabelEncoder:
        labels = tuple(sorted(set(values)))
        if len(labels) < 2:
            raise DataError(f"need at least 2 distinct labels, found {len(labels)}")
        return cls(labels)

    def encode(self, values: Sequence[str]) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.labels)}
        missing = sorted({v for v in values if v not in index})
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            raise DataError(f"labels not seen in training: {shown}{' ...' if len(missing) > 5 else ''}")
        return np.array([index[v] for v in values], dtype=np.int64)


def stratified_split(y: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): ``fraction`` of each class held out.

    Every class keeps at least one example; a class with 2+ examples gives at
    least one to the held-out side (so rare classes are evaluated too).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must be in (0, 1)")
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    held: list[int] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_held = int(round(len(idx) * fraction))
        n_held = min(max(n_held, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        held.extend(idx[:n_held].tolist())
        keep.extend(idx[n_held:].tolist())
    return np.sort(np.array(keep, dtype=np.int64)), np.sort(np.array(held, dtype=np.int64))
