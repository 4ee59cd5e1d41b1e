"""The receive thread and the heartbeat thread of a worker.

The **receive thread** moves messages from the queue into this worker's in-flight hash, many
per Redis round trip (:meth:`worker.inflight.Inflight.receive`), decodes and validates them
(:func:`worker.intake.intake`), counts their tokens, and puts them in the buffer, never more than
the buffer has room for. When the queue is empty it blocks on ``BLMOVE`` (no polling).

The **heartbeat thread** refreshes this worker's alive key on its own schedule, whatever the
batches do (a batch longer than the key's TTL does not make the worker look dead), and returns
the in-flight messages of workers whose key expired.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Collection

from worker.backoff import Backoff
from worker.buffer import Buffer
from worker.inflight import MAX_RECEIVE, Inflight
from worker.intake import IntakeLimits, Received, intake
from worker.osthread import name_this_thread

log = logging.getLogger(__name__)

#: seconds a BLMOVE waits for a message before the loop looks at its stop flag again
WAIT_S = 1.0


class Receiver:
    def __init__(self, inflight: Inflight, buffer: Buffer[Received], limits: IntakeLimits,
                 count_tokens: Callable[[str], int | None] | None = None,
                 revoked: Callable[[], Collection[str]] = lambda: ()) -> None:
        self.inflight, self.buffer, self.limits = inflight, buffer, limits
        self.count_tokens = count_tokens
        self.revoked = revoked
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="embedclf-receive", daemon=True)
        self._backoff = Backoff("broker (receive)")
        #: texts per message expected of the next receive: how many messages fit the buffer's room.
        #: It starts at a full batch (a first receive never takes more than the buffer holds, whatever
        #: the messages carry), rises at once to a larger message seen and decays by half toward smaller ones.
        self._texts_per_msg = float(max(1, buffer.batcher.max_size))
        self.received = 0
        #: monotonic time of the last successful round trip to Redis (liveness)
        self.last_ok = time.monotonic()

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = WAIT_S + 5) -> None:
        self.stop_event.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        name_this_thread()
        while not self.stop_event.is_set():
            room = self.buffer.room()
            if room <= 0:
                self.buffer.wait_for_room(0.5)
                continue
            n = max(1, min(MAX_RECEIVE, int(room / self._texts_per_msg)))
            try:
                entries = self.inflight.receive(n, self.limits.max_payload_bytes)
                if not entries:
                    self.inflight.wait(WAIT_S)
                self._backoff.ok()
                self.last_ok = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - Redis down or restarting: wait and retry
                self.stop_event.wait(self._backoff.failed(exc))
                continue
            if not entries:
                continue
            texts = self._intake(entries)
            self.received += len(entries)
            seen = texts / len(entries)
            self._texts_per_msg = seen if seen > self._texts_per_msg else max(1.0, (self._texts_per_msg + seen) / 2)

    def _intake(self, entries: list) -> int:
        """Decode ``entries`` into the buffer, a batch's worth at a time (the batch thread can start on
        the first batch while the rest are decoded); returns the texts they carry."""
        now = dt.datetime.now(dt.timezone.utc)
        revoked = self.revoked()
        step = max(1, self.buffer.batcher.max_size)
        total, pending, pending_texts = 0, [], 0
        for e in entries:
            p = intake(e, self.limits, now, self.count_tokens, revoked)
            pending.append((p, p.tokens, p.n_texts))
            pending_texts += p.n_texts
            if pending_texts >= step:
                self.buffer.put(pending)
                total, pending, pending_texts = total + pending_texts, [], 0
        if pending:
            self.buffer.put(pending)
        return total + pending_texts


class Heartbeat:
    """Refreshes the alive key every ``interval_s``; reaps dead workers every ``reap_s``."""

    def __init__(self, inflight: Inflight, interval_s: float, reap_s: float,
                 on_reaped: Callable[[str, int, int], None] | None = None,
                 on_tick: Callable[[], None] | None = None) -> None:
        self.inflight = inflight
        self.interval_s, self.reap_s = interval_s, reap_s
        self.on_reaped = on_reaped
        self.on_tick = on_tick
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="embedclf-heartbeat", daemon=True)
        self._backoff = Backoff("broker (heartbeat)")
        self.last_ok = time.monotonic()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)

    def _run(self) -> None:
        name_this_thread()
        reaped_at = time.monotonic()
        while not self.stop_event.wait(self.interval_s):
            if self.on_tick is not None:
                try:
                    self.on_tick()
                except Exception:  # noqa: BLE001 - a probe must not stop the heartbeat
                    log.exception("heartbeat probe failed")
            try:
                if not self.inflight.heartbeat():
                    log.warning("this worker's heartbeat had expired (blocked or cut off from Redis for more than "
                                "%.0fs): other workers may have returned its messages to the queue; they will be "
                                "processed again, with one row each", self.inflight.alive_ttl_s)
                if time.monotonic() - reaped_at >= self.reap_s:
                    reaped_at = time.monotonic()
                    orphans = self.inflight.resync()
                    if orphans:
                        log.warning("returned %d message(s) of this worker's in-flight records that it no longer "
                                    "held (an ack undone by a Redis failover or restart) to the queue", orphans)
                    for wid, n, charged in self.inflight.reap():
                        log.warning("worker %s is gone (heartbeat expired): returned its %d message(s) to the queue "
                                    "(%d charged one attempt: they were being processed)", wid, n, charged)
                        if self.on_reaped is not None:
                            self.on_reaped(wid, n, charged)
                self._backoff.ok()
                self.last_ok = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - Redis down: keep trying
                self._backoff.failed(exc)
