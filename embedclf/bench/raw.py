"""Raw embedder throughput: ``embed_batch`` on consecutive chunks, in file order.

That is how a worker receives texts: a batch is whatever arrived together, not a
length-sorted group (``Embedder.embed`` sorts by length; the worker cannot).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

from embedclf.bench import BenchError
from embedclf.bench.stats import rate
from embedclf.embedders.base import Embedder
from embedclf.progress import bar as progress_bar


@dataclass(frozen=True)
class RawRun:
    batch_size: int
    n: int
    seconds: float
    tokens: int | None = None
    #: llama ``n_batch`` asked for, and what llama.cpp actually uses (it caps n_batch at n_ctx)
    n_batch: int | None = None
    n_batch_effective: int | None = None
    #: with several rounds: each round's seconds (``seconds`` is their median)
    round_seconds: tuple[float, ...] | None = None
    #: processes that embedded the texts at once, each all of them (``n`` counts every process's texts)
    processes: int = 1

    @property
    def texts_per_s(self) -> float:
        return rate(self.n, self.seconds)

    @property
    def tokens_per_s(self) -> float | None:
        return None if self.tokens is None else rate(self.tokens, self.seconds)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 4)
        if self.round_seconds is not None:
            d["round_seconds"] = [round(x, 4) for x in self.round_seconds]
        d["texts_per_s"] = round(self.texts_per_s, 2)
        tps = self.tokens_per_s
        d["tokens_per_s"] = None if tps is None else round(tps, 1)
        return d


def chunks(texts: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def time_embed(embedder: Embedder, texts: Sequence[str], batch_size: int,
               progress: Callable[[int], None] | None = None) -> float:
    """Seconds to embed ``texts`` in consecutive ``batch_size`` chunks, after one warm-up call."""
    if not texts:
        raise BenchError("no texts to embed")
    embedder.embed_batch(texts[:batch_size])  # warm-up: lazy allocations, kernel selection, caches
    start = time.perf_counter()
    for chunk in chunks(texts, batch_size):
        embedder.embed_batch(chunk)
        if progress is not None:
            progress(len(chunk))
    return time.perf_counter() - start


def count_tokens(embedder: Embedder, texts: Sequence[str]) -> int | None:
    """Total tokens the model sees for ``texts``, or None if the embedder cannot count."""
    total = 0
    for t in texts:
        n = embedder.count_tokens(t)
        if n is None:
            return None
        total += n
    return total


def measure(embedder: Embedder, texts: Sequence[str], batch_size: int, *, quiet: bool, tokens: int | None = None,
            n_batch: int | None = None, label: str | None = None) -> RawRun:
    """One timed pass (with a progress bar on stderr unless ``quiet``)."""
    with progress_bar(total=len(texts), desc=label or f"batch {batch_size}", unit="text", disable=quiet,
              dynamic_ncols=True, leave=False) as bar:
        seconds = time_embed(embedder, texts, batch_size, bar.update)
    return RawRun(batch_size, len(texts), seconds, tokens, n_batch, effective_n_batch(embedder) if n_batch else None)


def sweep(embedder: Embedder, texts: Sequence[str], batch_sizes: Sequence[int], *, quiet: bool,
          n_batch: int | None = None) -> list[RawRun]:
    tokens = count_tokens(embedder, texts)
    prefix = f"n_batch {n_batch}, " if n_batch else ""
    return [measure(embedder, texts, bs, quiet=quiet, tokens=tokens, n_batch=n_batch, label=f"{prefix}batch {bs}")
            for bs in batch_sizes]


def median_run(runs: Sequence[RawRun]) -> RawRun:
    """One run per round of the same measurement -> one run with the median seconds."""
    secs = tuple(r.seconds for r in runs)
    first = runs[0]
    return RawRun(first.batch_size, first.n, statistics.median(secs), first.tokens, first.n_batch,
                  first.n_batch_effective, secs if len(secs) > 1 else None, first.processes)


Measurer = Callable[[int, str], RawRun]


def compare(measurers: Sequence[Measurer], names: Sequence[str], batch_sizes: Sequence[int],
            rounds: int) -> list[list[RawRun]]:
    """Several embedders on the same texts, interleaved: round after round, each batch size, each embedder in
    turn, so a change in machine load hits them alike. Per embedder and batch size: the median of the rounds.

    ``measurers[k](batch_size, label)`` times embedder k once (see :func:`in_process`).
    """
    per: list[list[list[RawRun]]] = [[[] for _ in batch_sizes] for _ in measurers]
    for r in range(rounds):
        for b, bs in enumerate(batch_sizes):
            for k, run in enumerate(measurers):
                per[k][b].append(run(bs, f"round {r + 1}/{rounds}, {names[k]}, batch {bs}"))
    return [[median_run(runs) for runs in by_batch] for by_batch in per]


def in_process(embedder: Embedder, texts: Sequence[str], *, quiet: bool) -> Measurer:
    tokens = count_tokens(embedder, texts)
    return lambda bs, label: measure(embedder, texts, bs, quiet=quiet, tokens=tokens, label=label)


def ratios(results: Sequence[Sequence[RawRun]]) -> list[dict]:
    """Each embedder's texts/s over the first one's: best against best, and per batch size."""
    ref = results[0]
    out = []
    for runs in results:
        out.append({
            "best": round(best(runs).texts_per_s / best(ref).texts_per_s, 3),
            "per_batch": {str(r.batch_size): round(r.texts_per_s / q.texts_per_s, 3) for r, q in zip(runs, ref)},
        })
    return out


def with_option(spec: str, key: str, value: object) -> str:
    """``spec`` with ``key=value`` appended (``?`` or ``&``); a later option overrides an alias's."""
    return f"{spec}{'&' if '?' in spec else '?'}{key}={value}"


def effective_n_batch(embedder: Embedder) -> int | None:
    """Tokens per llama.cpp decode as the context really has it (None for other embedders)."""
    try:
        return int(embedder.llm.context_params.n_batch)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None


def best(runs: Sequence[RawRun]) -> RawRun:
    return max(runs, key=lambda r: r.texts_per_s)
