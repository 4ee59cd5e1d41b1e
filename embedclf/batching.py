"""When to flush a batch: a pure, clock-injected policy.

A batch is due when the buffer holds ``max_size`` texts, when its token total
reaches ``max_tokens`` (for embedders that count tokens), or when its oldest
item has waited ``max_wait_s``. The worker feeds items in as messages arrive
and asks :meth:`Batcher.due` from a timer.

While the worker is busy with one batch the buffer keeps filling, so it may hold
more than one batch's worth; :meth:`Batcher.take` hands out one batch within the
limits (always at least one item, however many tokens it has) and keeps the rest,
each item keeping its own arrival time.

An item may stand for several texts (a multi-text task): ``add(item, tokens, size)``
counts its ``size`` texts, and :meth:`Batcher.take` never splits an item: a batch is
whole items up to ``max_size`` texts, or one item however large.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Batcher(Generic[T]):
    max_size: int
    max_wait_s: float
    max_tokens: int | None = None
    clock: Callable[[], float] = time.monotonic
    #: (item, tokens, size, arrival time), oldest first
    _items: deque = field(default_factory=deque)
    _tokens: int = 0
    _size: int = 0

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError("max_size must be >= 1")
        if self.max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1 (or None)")

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """Texts buffered (the sum of the items' sizes)."""
        return self._size

    @property
    def tokens(self) -> int:
        return self._tokens

    def add(self, item: T, tokens: int = 0, size: int = 1) -> bool:
        """Buffer ``item`` (``size`` texts); returns True when a batch should be flushed now."""
        tokens, size = max(0, tokens), max(1, size)
        self._items.append((item, tokens, size, self.clock()))
        self._tokens += tokens
        self._size += size
        return self.full()

    def full(self) -> bool:
        if self._size >= self.max_size:
            return True
        return self.max_tokens is not None and self._tokens >= self.max_tokens

    def due(self) -> bool:
        """True when a batch is full or the oldest item has waited long enough."""
        if not self._items:
            return False
        if self.full():
            return True
        return bool(self.clock() - self._items[0][3] >= self.max_wait_s)

    def wait_left(self) -> float | None:
        """Seconds until the oldest item's batch becomes due (None when empty)."""
        if not self._items:
            return None
        if self.full():
            return 0.0
        return float(max(0.0, self.max_wait_s - (self.clock() - self._items[0][3])))

    def take(self) -> list[T]:
        """The oldest items that fit in one batch (at least one); the rest stay buffered."""
        out: list[T] = []
        tokens = size = 0
        while self._items:
            item, n, k, _at = self._items[0]
            if out and (size + k > self.max_size or (self.max_tokens is not None and tokens + n > self.max_tokens)):
                break
            self._items.popleft()
            out.append(item)
            tokens += n
            size += k
        self._tokens -= tokens
        self._size -= size
        return out

    def take_all(self) -> list[T]:
        """Every buffered item, oldest first (the buffer is left empty)."""
        out = [entry[0] for entry in self._items]
        self._items.clear()
        self._tokens = self._size = 0
        return out
