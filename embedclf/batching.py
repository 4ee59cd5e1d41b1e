"""When to flush a batch: a pure, clock-injected policy.

A batch is flushed when it holds ``max_size`` items, when its token total
reaches ``max_tokens`` (for embedders that count tokens), or when its oldest
item has waited ``max_wait_s``. The worker feeds items in as messages arrive
and asks :meth:`Batcher.due` from a timer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass
class Batcher(Generic[T]):
    max_size: int
    max_wait_s: float
    max_tokens: int | None = None
    clock: Callable[[], float] = time.monotonic
    _items: list[T] = field(default_factory=list)
    _tokens: int = 0
    _first_at: float | None = None

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError("max_size must be >= 1")
        if self.max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")

    def __len__(self) -> int:
        return len(self._items)

    @property
    def tokens(self) -> int:
        return self._tokens

    def add(self, item: T, tokens: int = 0) -> bool:
        """Buffer ``item``; returns True when the batch should be flushed now."""
        if not self._items:
            self._first_at = self.clock()
        self._items.append(item)
        self._tokens += max(0, tokens)
        return self.full()

    def full(self) -> bool:
        if len(self._items) >= self.max_size:
            return True
        return self.max_tokens is not None and self._tokens >= self.max_tokens

    def due(self) -> bool:
        """True when the batch is full or its oldest item has waited long enough."""
        if not self._items:
            return False
        if self.full():
            return True
        assert self._first_at is not None
        return self.clock() - self._first_at >= self.max_wait_s

    def wait_left(self) -> float | None:
        """Seconds until the current batch becomes due (None when empty)."""
        if not self._items or self._first_at is None:
            return None
        return max(0.0, self.max_wait_s - (self.clock() - self._first_at))

    def take(self) -> list[T]:
        items, self._items = self._items, []
        self._tokens = 0
        self._first_at = None
        return items
