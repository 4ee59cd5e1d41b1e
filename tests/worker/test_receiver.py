"""The receive thread's sizing: how many messages it takes per round trip, and when they reach the buffer.

A fake in-flight list hands out encoded messages (no services needed); the buffer and the
decoding are the real ones.
"""

from __future__ import annotations

import threading

from embedclf.batching import Batcher
from embedclf.envelope import encode
from worker.buffer import Buffer
from worker.inflight import Entry
from worker.intake import IntakeLimits
from worker.receiver import Receiver

LIMITS = IntakeLimits(max_payload_bytes=1 << 22, max_text_chars=1000, max_texts=1000, max_attempts=3)
BATCH = 8


class FakeInflight:
    """Messages of ``texts_per_msg`` texts; records how many each receive asked for."""

    def __init__(self, messages: int, texts_per_msg: int) -> None:
        self.left, self.texts_per_msg = messages, texts_per_msg
        self.asked: list[int] = []
        self.tag = 0

    def receive(self, n: int, max_bytes: int) -> list[Entry]:
        self.asked.append(n)
        out = []
        for _ in range(min(n, self.left)):
            self.tag += 1
            if self.texts_per_msg == 1:
                kwargs: dict = {"head": "h", "text": f"text {self.tag}"}
            else:
                kwargs = {"head": "h", "texts": [f"text {self.tag} {i}" for i in range(self.texts_per_msg)]}
            raw = encode("embedclf.classify", f"t{self.tag}", kwargs, "celery")
            out.append(Entry(tag=self.tag, deaths=0, size=len(raw), raw=raw))
        self.left -= len(out)
        return out

    def wait(self, timeout: float) -> None:
        pass


def make(messages: int, texts_per_msg: int) -> tuple[Receiver, FakeInflight, Buffer]:
    buffer: Buffer = Buffer(Batcher(max_size=BATCH, max_wait_s=0.0, max_tokens=10**9), capacity=2 * BATCH)
    inflight = FakeInflight(messages, texts_per_msg)
    return Receiver(inflight, buffer, LIMITS), inflight, buffer  # type: ignore[arg-type]


def drain(receiver: Receiver, buffer: Buffer, expected_texts: int) -> list[int]:
    """Run the receive loop while taking batches out; returns the batch sizes (in texts)."""
    sizes: list[int] = []
    receiver.start()
    try:
        while sum(sizes) < expected_texts:
            batch = buffer.take(timeout=5.0)
            assert batch, "the receiver stalled"
            sizes.append(sum(p.n_texts for p in batch))
    finally:
        receiver.stop()
    return sizes


def test_a_first_receive_of_large_messages_never_overfills_the_buffer() -> None:
    """Before it has seen a message, the receiver assumes a full batch per message: with messages of
    ``BATCH`` texts it takes two (the buffer's room), not one per free text slot (16 messages, 128 texts)."""
    receiver, inflight, buffer = make(messages=40, texts_per_msg=BATCH)
    sizes = drain(receiver, buffer, 40 * BATCH)
    assert inflight.asked[0] == 2
    assert max(inflight.asked) <= 2  # the estimate stays at a batch per message
    assert sum(sizes) == 40 * BATCH and all(s == BATCH for s in sizes)


def test_single_text_messages_ramp_up_to_the_room() -> None:
    """With one text per message the estimate halves toward 1 at each receive: asks grow to the room."""
    receiver, inflight, buffer = make(messages=500, texts_per_msg=1)
    sizes = drain(receiver, buffer, 500)
    assert sum(sizes) == 500
    assert inflight.asked[0] == 2
    assert max(inflight.asked) >= BATCH  # it asked for at least a batch of single-text messages at once


def test_a_larger_message_raises_the_estimate_at_once() -> None:
    receiver, inflight, buffer = make(messages=3, texts_per_msg=1)
    sizes = drain(receiver, buffer, 3)
    assert sum(sizes) == 3
    inflight.left, inflight.texts_per_msg = 10, 4 * BATCH
    receiver.stop_event = threading.Event()
    receiver.thread = threading.Thread(target=receiver._run, daemon=True)
    asked_before = len(inflight.asked)
    drain(receiver, buffer, 10 * 4 * BATCH)
    later = [n for n in inflight.asked[asked_before + 1:] if n]
    assert later and max(later) == 1  # after one 32-text message, one message per receive


def test_received_messages_reach_the_buffer_a_batch_at_a_time() -> None:
    """A receive of many messages feeds the buffer in slices: the batch thread starts on the
    first batch while the rest are still being decoded."""
    buffer: Buffer = Buffer(Batcher(max_size=BATCH, max_wait_s=0.0, max_tokens=10**9), capacity=10**6)
    inflight = FakeInflight(messages=5 * BATCH, texts_per_msg=1)
    receiver = Receiver(inflight, buffer, LIMITS)  # type: ignore[arg-type]
    receiver._texts_per_msg = 1.0
    puts: list[int] = []
    original = buffer.put

    def counting_put(items: list) -> None:
        puts.append(len(items))
        original(items)

    buffer.put = counting_put  # type: ignore[method-assign]
    assert receiver._intake(inflight.receive(5 * BATCH, LIMITS.max_payload_bytes)) == 5 * BATCH
    assert puts == [BATCH] * 5
