"""Batcher: flush on size, token budget or max wait, with an injected clock."""

from __future__ import annotations

import pytest

from embedclf.batching import Batcher


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_flush_on_size(clock):
    b: Batcher[str] = Batcher(max_size=3, max_wait_s=10.0, clock=clock)
    assert b.add("a") is False
    assert b.add("b") is False
    assert not b.due()
    assert b.add("c") is True
    assert b.full() and b.due()
    assert len(b) == 3


def test_flush_on_token_budget(clock):
    b: Batcher[str] = Batcher(max_size=100, max_wait_s=10.0, max_tokens=50, clock=clock)
    assert b.add("a", tokens=20) is False
    assert b.add("b", tokens=29) is False
    assert b.tokens == 49
    assert not b.due()
    assert b.add("c", tokens=1) is True  # exactly at the budget
    assert b.tokens == 50 and b.due()


def test_single_oversized_item_flushes_immediately(clock):
    b: Batcher[str] = Batcher(max_size=100, max_wait_s=10.0, max_tokens=50, clock=clock)
    assert b.add("huge", tokens=500) is True


def test_tokens_ignored_without_budget_and_negative_tokens_clamped(clock):
    b: Batcher[str] = Batcher(max_size=100, max_wait_s=10.0, clock=clock)
    assert b.add("a", tokens=10**9) is False
    b2: Batcher[str] = Batcher(max_size=100, max_wait_s=10.0, max_tokens=10, clock=clock)
    b2.add("a", tokens=-100)
    assert b2.tokens == 0
    assert b2.add("b", tokens=9) is False


def test_flush_on_max_wait_measured_from_oldest_item(clock):
    # binary fractions keep the fake-clock arithmetic exact
    b: Batcher[int] = Batcher(max_size=100, max_wait_s=0.5, clock=clock)
    assert not b.due()  # empty is never due, however long we wait
    clock.advance(100)
    assert not b.due()
    b.add(1)
    clock.advance(0.375)
    b.add(2)  # a newer item must not restart the timer
    assert not b.due()
    clock.advance(0.0625)
    assert not b.due()
    clock.advance(0.0625)
    assert b.due()


def test_wait_left(clock):
    b: Batcher[int] = Batcher(max_size=100, max_wait_s=0.5, clock=clock)
    assert b.wait_left() is None
    b.add(1)
    assert b.wait_left() == pytest.approx(0.5)
    clock.advance(0.2)
    b.add(2)
    assert b.wait_left() == pytest.approx(0.3)
    assert not b.due()
    clock.advance(1.0)
    assert b.wait_left() == 0.0  # never negative


def test_take_returns_items_in_order_and_resets(clock):
    b: Batcher[str] = Batcher(max_size=3, max_wait_s=0.5, max_tokens=100, clock=clock)
    for item in "xyz":
        b.add(item, tokens=10)
    clock.advance(1.0)
    assert b.due()
    assert b.take() == ["x", "y", "z"]
    assert len(b) == 0 and b.tokens == 0
    assert not b.due() and b.wait_left() is None
    assert b.take() == []
    # the next batch starts its own timer at its first item
    b.add("n")
    assert b.wait_left() == pytest.approx(0.5)
    assert not b.due()


def test_take_result_is_not_aliased(clock):
    b: Batcher[str] = Batcher(max_size=10, max_wait_s=1.0, clock=clock)
    b.add("a")
    first = b.take()
    b.add("b")
    assert first == ["a"]


def test_zero_wait_is_due_immediately(clock):
    b: Batcher[int] = Batcher(max_size=10, max_wait_s=0.0, clock=clock)
    b.add(1)
    assert b.due()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({"max_size": 0, "max_wait_s": 1}, "max_size"), ({"max_size": 1, "max_wait_s": -1}, "max_wait_s")],
)
def test_invalid_settings(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        Batcher(**kwargs)


def test_instances_do_not_share_buffers(clock):
    a: Batcher[int] = Batcher(max_size=10, max_wait_s=1.0, clock=clock)
    b: Batcher[int] = Batcher(max_size=10, max_wait_s=1.0, clock=clock)
    a.add(1)
    assert len(b) == 0


def test_take_hands_out_one_batch_and_keeps_the_rest(clock):
    # the worker keeps buffering while a batch is embedded: the buffer can outgrow one batch
    b: Batcher[int] = Batcher(max_size=3, max_wait_s=0.5, clock=clock)
    for i in range(7):
        b.add(i)
    assert b.take() == [0, 1, 2]
    assert b.take() == [3, 4, 5]
    assert len(b) == 1 and not b.full()
    assert b.take() == [6]


def test_take_respects_the_token_budget(clock):
    b: Batcher[str] = Batcher(max_size=100, max_wait_s=0.5, max_tokens=50, clock=clock)
    for item, n in [("a", 20), ("b", 20), ("c", 20), ("d", 5), ("huge", 500), ("e", 1)]:
        b.add(item, tokens=n)
    assert b.take() == ["a", "b"]  # "c" would exceed 50
    assert b.tokens == 526
    assert b.take() == ["c", "d"]  # stops before "huge"
    assert b.take() == ["huge"]  # an oversized item still goes, alone
    assert b.take() == ["e"] and b.tokens == 0


def test_leftover_items_keep_their_own_arrival_time(clock):
    b: Batcher[int] = Batcher(max_size=2, max_wait_s=0.5, clock=clock)
    for i in (1, 2, 3):
        b.add(i)
    clock.advance(0.25)
    assert b.take() == [1, 2]
    # item 3 has waited 0.25 s already: its batch is due 0.25 s later, not 0.5 s
    assert b.wait_left() == pytest.approx(0.25)
    clock.advance(0.25)
    assert b.due()


def test_invalid_token_budget():
    with pytest.raises(ValueError, match="max_tokens"):
        Batcher(max_size=1, max_wait_s=1, max_tokens=0)
