"""The write threads' batch stamps (``completed_at``): unique in the process, in the order batches are taken."""

from __future__ import annotations

import datetime as dt
import threading

from worker.writer import Stamps


def test_stamps_are_unique_and_increasing_across_threads_even_when_the_clock_stands_still_or_goes_back():
    ticks = iter([5_000_000_000, 5_000_000_000, 4_999_000_000] + [5_000_000_000] * 10_000)  # ns
    stamps = Stamps(clock=lambda: next(ticks))
    a = stamps.take()
    b = stamps.take(3)  # a group of three batches: b, b + 1 µs, b + 2 µs
    c = stamps.take()  # the clock went back a millisecond
    assert a == dt.datetime(1970, 1, 1, 0, 0, 5, tzinfo=dt.timezone.utc)
    assert (b - a, c - b) == (dt.timedelta(microseconds=1), dt.timedelta(microseconds=3))

    seen: list[dt.datetime] = []
    lock = threading.Lock()

    def take_many() -> None:
        for _ in range(1000):
            t = stamps.take(2)
            with lock:
                seen.append(t)

    threads = [threading.Thread(target=take_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    firsts = sorted(seen)
    assert len(set(firsts)) == 4000 and firsts[0] > c
    # each group of two owns two microseconds: no two groups overlap
    assert all(later - earlier >= dt.timedelta(microseconds=2) for earlier, later in zip(firsts, firsts[1:]))


def test_stamps_follow_the_wall_clock():
    before = dt.datetime.now(dt.timezone.utc)
    got = Stamps().take()
    after = dt.datetime.now(dt.timezone.utc)
    assert before - dt.timedelta(microseconds=1) <= got <= after + dt.timedelta(microseconds=1)
