"""The bounded hand-over between the receive thread and the batch thread."""

from __future__ import annotations

import threading
import time

from embedclf.batching import Batcher
from worker.buffer import Buffer


def test_batches_come_out_whole_and_the_buffer_bounds_what_is_received():
    buf: Buffer[str] = Buffer(Batcher(max_size=4, max_wait_s=10.0), capacity=8)
    assert buf.room() == 8
    buf.put([("a", 0, 1), ("big", 0, 5), ("c", 0, 1)])
    assert buf.room() == 1
    assert buf.take(timeout=0.1) == ["a"]  # 'big' would overflow 4 texts: a batch never splits a message
    assert buf.take(timeout=0.1) == ["big"]  # alone, however large
    assert buf.room() == 7


def test_take_waits_for_max_wait_then_returns_what_is_there():
    buf: Buffer[int] = Buffer(Batcher(max_size=100, max_wait_s=0.2), capacity=200)
    buf.put([(1, 0, 1)])
    t0 = time.monotonic()
    assert buf.take(timeout=5) == [1]
    assert 0.15 <= time.monotonic() - t0 < 2


def test_take_times_out_empty_and_wakes_on_put():
    buf: Buffer[int] = Buffer(Batcher(max_size=2, max_wait_s=10.0), capacity=4)
    assert buf.take(timeout=0.05) == []
    threading.Timer(0.1, lambda: buf.put([(1, 0, 1), (2, 0, 1)])).start()
    assert buf.take(timeout=5) == [1, 2]


def test_close_hands_back_what_was_buffered_and_wakes_waiters():
    buf: Buffer[int] = Buffer(Batcher(max_size=10, max_wait_s=10.0), capacity=20)
    buf.put([(1, 0, 1), (2, 0, 1)])
    out: list = []
    t = threading.Thread(target=lambda: out.append(buf.take()))
    t.start()
    time.sleep(0.05)
    assert buf.close() == [1, 2]
    t.join(2)
    assert out == [[]] and buf.take() == []


def test_a_take_that_does_not_notify_leaves_the_receiver_waiting_until_notify_room():
    """The batch thread takes a batch without waking the receiver, and wakes it once its model runs."""
    buf: Buffer[int] = Buffer(Batcher(max_size=2, max_wait_s=10.0), capacity=2)
    buf.put([(1, 0, 1), (2, 0, 1)])
    assert buf.room() == 0 and buf.due()
    woke: list[float] = []
    waiter = threading.Thread(target=lambda: (buf.wait_for_room(5.0), woke.append(time.monotonic())))
    waiter.start()
    time.sleep(0.05)
    assert buf.take(timeout=0.1, notify=False) == [1, 2]
    assert not buf.due()
    time.sleep(0.3)
    assert woke == []  # still asleep though there is room
    told = time.monotonic()
    buf.notify_room()
    waiter.join(2)
    assert woke and woke[0] - told < 1.0
