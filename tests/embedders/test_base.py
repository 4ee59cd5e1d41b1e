"""The pure parts of the embedder protocol: the token-id memo shared by a worker's receive and batch threads."""

from __future__ import annotations

import threading

from embedclf.embedders.base import TokenMemo


def test_take_returns_what_was_put_once_and_counts_hits_and_misses() -> None:
    memo = TokenMemo()
    assert memo.put("a", [1, 2, 3]) == [1, 2, 3]
    assert memo.take("a") == [1, 2, 3] and memo.take("a") is None and memo.take("b") is None
    assert (memo.hits, memo.misses, len(memo)) == (1, 2, 0)


def test_bounded_by_texts_and_by_tokens_oldest_out_first() -> None:
    memo = TokenMemo(max_texts=3, max_tokens=10)
    for i in range(5):
        memo.put(f"t{i}", [i])
    assert len(memo) == 3 and memo.take("t0") is None and memo.take("t4") == [4]
    memo = TokenMemo(max_texts=100, max_tokens=10)
    memo.put("long", list(range(8)))
    memo.put("short", [1, 2])
    memo.put("next", [3])  # 11 tokens: the oldest goes
    assert memo.take("long") is None and memo.take("short") == [1, 2] and memo.take("next") == [3]
    memo.put("x", [1, 2])
    memo.put("x", [1, 2, 3, 4, 5, 6, 7, 8, 9])  # a re-put replaces, its old tokens are not counted twice
    assert memo.take("x") == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    memo.put("huge", list(range(11)))  # larger than the bound: not kept
    assert len(memo) == 0 and memo.take("huge") is None


def test_one_thread_puts_while_another_takes() -> None:
    memo = TokenMemo(max_texts=50)
    taken: list[tuple[str, object]] = []

    def put() -> None:
        for i in range(20_000):
            memo.put(f"t{i}", [i, i])

    th = threading.Thread(target=put)
    th.start()
    for i in range(20_000):
        taken.append((f"t{i}", memo.take(f"t{i}")))
    th.join()
    assert all(ids is None or ids == [int(t[1:])] * 2 for t, ids in taken)
    assert len(memo) <= 50 and memo.hits + memo.misses == 20_000


def test_model_starting_runs_the_callback_of_this_thread_once_and_only_inside_its_block():
    import threading

    from embedclf.embedders.base import model_starting, when_model_starts

    calls: list[str] = []
    model_starting()  # nothing registered: a no-op
    with when_model_starts(lambda: calls.append("main")):
        other = threading.Thread(target=model_starting)  # another thread's embedder: not this callback
        other.start()
        other.join()
        assert calls == []
        model_starting()
        model_starting()  # once only
    model_starting()
    assert calls == ["main"]
