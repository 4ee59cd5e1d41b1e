"""The hand-over between the receive thread and the batch thread: a bounded, thread-safe batcher.

The receive thread puts decoded messages in; the batch thread takes whole batches out when
:class:`embedclf.batching.Batcher` says one is due (size, tokens or max-wait). The buffer holds
at most ``capacity`` texts (a single message larger than that is still accepted when the
buffer is empty), so a slow batch stops receiving instead of growing the worker.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

from embedclf.batching import Batcher

T = TypeVar("T")


class Buffer(Generic[T]):
    def __init__(self, batcher: Batcher[T], capacity: int) -> None:
        self.batcher = batcher
        self.capacity = max(1, capacity)
        self._cond = threading.Condition()
        self._closed = False

    def room(self) -> int:
        """Texts that still fit."""
        with self._cond:
            return self.capacity - self.batcher.size

    def wait_for_room(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._closed or self.batcher.size < self.capacity, timeout)

    def put(self, items: list[tuple[T, int, int]]) -> None:
        """Add ``(item, tokens, size)`` entries."""
        with self._cond:
            for item, tokens, size in items:
                self.batcher.add(item, tokens, size)
            self._cond.notify_all()

    def take(self, timeout: float | None = None, notify: bool = True) -> list[T]:
        """The next batch once one is due; [] after ``timeout`` or once closed. ``notify=False``: the
        receiver is not told of the room now, but at :meth:`notify_room` (or its own wait's timeout)."""
        with self._cond:
            while True:
                if self._closed:
                    return []
                if self.batcher.due():
                    out = self.batcher.take()
                    if notify:
                        self._cond.notify_all()  # room for the receiver
                    return out
                left = self.batcher.wait_left()
                if timeout is not None:
                    left = timeout if left is None else min(left, timeout)
                if not self._cond.wait(left) and timeout is not None and left == timeout:
                    return []

    def notify_room(self) -> None:
        """Wake the receiver if it waits for room."""
        with self._cond:
            self._cond.notify_all()

    def due(self) -> bool:
        """A batch could be taken now, without waiting."""
        with self._cond:
            return not self._closed and self.batcher.due()

    def close(self) -> list[T]:
        """Stop handing out batches; returns what was still buffered."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            return self.batcher.take_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self.batcher)
