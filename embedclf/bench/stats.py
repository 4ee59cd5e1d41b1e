"""Pure helpers: latency percentiles, the batch-size distribution of result rows, a mean's confidence interval."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": .., "p95": .., "p99": ..}`` (linear interpolation), plus mean and max."""
    if not values:
        raise ValueError("no values")
    arr = np.asarray(values, dtype=np.float64)
    out = {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}
    out["mean"] = float(arr.mean())
    out["max"] = float(arr.max())
    return out


def bucket_edges(max_size: int) -> list[int]:
    """Lower edges of power-of-two buckets, with one bucket of exactly ``max_size`` (full batches)."""
    edges = [1]
    while edges[-1] * 2 < max_size:
        edges.append(edges[-1] * 2)
    if max_size > 1:
        edges.append(max_size)
    return edges


def histogram(sizes: Iterable[int], max_size: int) -> list[dict]:
    """Batch sizes counted in buckets "1", "2-3", "4-7", ..., "32-63", "64" (for max_size 64).

    A list, so the buckets keep their order in JSON; a size above ``max_size``
    (should not happen) lands in a final ">max" bucket.
    """
    edges = bucket_edges(max_size)
    buckets: list[dict[str, Any]] = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] - 1 if i + 1 < len(edges) else lo
        buckets.append({"sizes": str(lo) if lo == hi else f"{lo}-{hi}", "batches": 0})
    over = 0
    for s in sizes:
        if s > max_size:
            over += 1
            continue
        i = max(j for j, lo in enumerate(edges) if lo <= s)
        buckets[i]["batches"] += 1
    if over:
        buckets.append({"sizes": f">{max_size}", "batches": over})
    return buckets


def batch_distribution(keys: Iterable[Hashable], max_size: int) -> dict:
    """Summary of batch sizes, where each row's key names its batch.

    The worker writes a batch in one INSERT whose ``completed_at`` is the transaction
    time, so ``(worker, completed_at)`` identifies a batch. When Postgres falls behind, a
    write thread commits the batches waiting for it together (one transaction); each of
    them still gets its own ``completed_at`` (a microsecond apart).
    """
    sizes = list(Counter(keys).values())
    if not sizes:
        return {"batches": 0, "mean": None, "min": 0, "max": 0, "full_fraction": 0.0, "histogram": []}
    return {
        "batches": len(sizes),
        "mean": round(sum(sizes) / len(sizes), 2),
        "min": min(sizes),
        "max": max(sizes),
        "full_fraction": round(sum(s >= max_size for s in sizes) / len(sizes), 3),
        "histogram": histogram(sizes, max_size),
    }


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of ``values`` and its two-sided ``level`` confidence interval (Student's t, the values taken as
    independent draws): ``{"mean", "lo", "hi", "n"}``; ``lo`` and ``hi`` are None for fewer than two values."""
    if not values:
        raise ValueError("no values")
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    arr = np.asarray(values, dtype=np.float64)
    mean, n = float(arr.mean()), len(arr)
    if n < 2:
        return {"mean": mean, "lo": None, "hi": None, "n": n}
    from scipy.stats import t

    half = float(t.ppf((1 + level) / 2, n - 1)) * float(arr.std(ddof=1)) / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def rate(n: int, seconds: float) -> float:
    """n / seconds, or inf/nan for a zero-length interval (callers check finiteness)."""
    if seconds <= 0:
        return math.inf if n else math.nan
    return n / seconds
