"""kombu's Redis transport without its message-loss window.

kombu takes a message off the queue with ``BRPOP`` and records it in its ``unacked``
hash only after the reply has been read and handed to the consumer. A worker killed
in between (``kill -9``, OOM, power loss) loses that message for good: it is in
neither the queue nor ``unacked`` (celery/celery#4354; the fault test saw 2 of 2,100
tasks lost that way across five kills).

This transport receives with ``BLMOVE queue landing RIGHT LEFT`` instead: Redis moves
the message atomically into a *landing list* owned by this channel. Once kombu has
recorded it as unacked (where its own visibility-timeout restore covers it) the landing
copy is removed. A landing list outlives its channel only if the process died in that
window; every channel keeps an ``alive`` key with a TTL, and any worker's sweep moves
the messages of a landing list whose owner is gone back to its queue, atomically
(a Lua script). A task can then run twice (it may have been in ``unacked`` too); the
results table's unique key keeps one row.

It needs one Redis list per queue, so the workers use a single priority step (``[0]``,
see :data:`TRANSPORT_OPTIONS`); with several queues or priority steps it falls back to
kombu's ``BRPOP``.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import contextmanager
from time import monotonic
from typing import Any, Iterator

from kombu.transport import redis as kredis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

log = logging.getLogger(__name__)

PREFIX = "embedclf:landing:"
#: hash {landing list key: queue}: every landing list, so sweeps need no SCAN
REGISTRY = "embedclf:landings"
#: how often a channel refreshes its ``alive`` key, and how long the key lives
HEARTBEAT_S = 5.0
ALIVE_TTL_S = 30
#: how often a channel sweeps dead landing lists
SWEEP_S = 10.0

#: landing copies are trimmed in one LTRIM per this many deliveries (not one LREM each)
TRIM_EVERY = 32

#: what workers pass as ``broker_transport_options`` on top of the visibility timeout
TRANSPORT_OPTIONS = {"priority_steps": [0]}

# KEYS: landing list, its alive key, the registry, the queue. ARGV: landing key, force.
# Moves everything back to the consuming end of the queue unless the owner is alive.
_RESTORE = """
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[4], 'RIGHT', 'RIGHT') do n = n + 1 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
return n
"""


def alive_key(landing: str) -> str:
    return landing + ":alive"


def restore(client: Any, landing: str, queue: str, force: bool = False) -> int:
    """Move ``landing``'s messages back to ``queue`` if its owner is gone (or ``force``).

    Returns how many moved, or -1 when the owner is alive.
    """
    return int(client.eval(_RESTORE, 4, landing, alive_key(landing), REGISTRY, queue, landing, "1" if force else "0"))


def sweep(client: Any) -> int:
    """Give back the messages of every landing list whose channel is gone; returns how many."""
    moved = 0
    for landing, queue in client.hgetall(REGISTRY).items():
        n = restore(client, bytes_to_str(landing), bytes_to_str(queue))
        if n > 0:
            log.warning("restored %d message(s) from %s: a worker died while receiving them", n,
                        bytes_to_str(landing))
            moved += n
    return moved


class QoS(kredis.QoS):
    """kombu's Redis QoS, plus acks of a whole batch in one pipeline (one round trip, not one each)."""

    _ack_pipe: Any = None

    def ack(self, delivery_tag: Any) -> None:
        if self._ack_pipe is None:
            return super().ack(delivery_tag)
        self._remove_from_indices(delivery_tag, self._ack_pipe)
        self._quick_ack(delivery_tag)
        return None

    @contextmanager
    def acks_in_one_round_trip(self) -> Iterator[None]:
        with self.pipe_or_acquire() as pipe:
            self._ack_pipe = pipe
            try:
                yield
            finally:
                self._ack_pipe = None
            pipe.execute()


@contextmanager
def batched_acks(messages: list[Any]) -> Iterator[None]:
    """Acks of ``messages`` made inside the block go to Redis in one round trip, where the
    messages came through this transport (otherwise each ack is its own round trip).

    If that round trip fails the messages stay in Redis's ``unacked`` hash and are
    redelivered after the visibility timeout; their rows exist, so nothing is duplicated.
    """
    qos = getattr(getattr(messages[0], "channel", None), "qos", None) if messages else None
    bulk = getattr(qos, "acks_in_one_round_trip", None)
    if bulk is None:
        yield
        return
    try:
        with bulk():
            yield
    except kredis.Transport.connection_errors as exc:  # type: ignore[misc]
        log.warning("acking %d messages failed (%s); they come back after the visibility timeout",
                    len(messages), exc)


class Channel(kredis.Channel):
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.landing_key = f"{PREFIX}{uuid.uuid4().hex}"
        self._landing_queue: str | None = None
        self._blmove_sent = False
        self._alive_at = float("-inf")
        self._swept_at = float("-inf")
        self._delivered = 0  # delivered messages whose landing copy is not trimmed yet

    def _single_key(self, queues: list[str]) -> bool:
        return len(queues) == 1 and list(self.priority_steps) == [0]

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        if not self._single_key(queues):
            self._blmove_sent = False
            return super()._brpop_start(timeout)
        queue = queues[0]
        self._housekeeping(queue)
        if timeout is None:
            timeout = self.brpop_timeout
        command = ["BLMOVE", queue, self.landing_key, "RIGHT", "LEFT", timeout or 0]
        if self.global_keyprefix:
            command = self.client._prefix_args(command)
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self._blmove_sent = True
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        if not self._blmove_sent:
            return super()._brpop_read(**options)
        self._blmove_sent = False
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if item is None:  # the queue is empty: an idle moment to trim
                if self._delivered:
                    with self.conn_or_acquire() as client:
                        self._trim(client)
                raise kredis.Empty()
            queue = self._landing_queue
            self._queue_cycle.rotate(queue)
            try:
                self.connection._deliver(loads(bytes_to_str(item)), queue)
            except Exception:
                # not taken: hand it straight back (it may also be in ``unacked`` by now:
                # it then runs twice and keeps one row)
                with self.conn_or_acquire() as client:
                    self._trim(client)
                    client.pipeline().rpush(queue, item).lrem(self.landing_key, -1, item).execute()
                raise
            # kombu now holds it in ``unacked``: the landing copy has done its job. Every
            # reply is delivered before the next BLMOVE, so the landing list holds exactly
            # the delivered messages: drop them in one LTRIM now and then.
            self._delivered += 1
            if self._delivered >= TRIM_EVERY:
                with self.conn_or_acquire() as client:
                    self._trim(client)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _trim(self, client: Any) -> None:
        """Remove the landing copies of the messages delivered so far (the oldest, at the right)."""
        if self._delivered:
            client.ltrim(self.landing_key, 0, -(self._delivered + 1))
            self._delivered = 0

    def _housekeeping(self, queue: str) -> None:
        """Register the landing list, refresh its alive key, sweep dead ones (all throttled)."""
        now = monotonic()
        if queue == self._landing_queue and now - self._alive_at < HEARTBEAT_S and now - self._swept_at < SWEEP_S:
            return
        with self.conn_or_acquire() as client:
            self._trim(client)
            if queue != self._landing_queue or now - self._alive_at >= HEARTBEAT_S:
                with client.pipeline() as pipe:
                    pipe.set(alive_key(self.landing_key), queue, ex=ALIVE_TTL_S)
                    pipe.hset(REGISTRY, self.landing_key, queue)
                    pipe.execute()
                self._landing_queue = queue
                self._alive_at = now
            if now - self._swept_at >= SWEEP_S:
                self._swept_at = now
                sweep(client)

    def close(self) -> None:
        if self._in_poll and not self.closed:
            try:  # deliver a reply still in flight first, as kombu's close does
                self._brpop_read()
            except kredis.Empty:
                pass
            except Exception as exc:  # noqa: BLE001 - connection gone: kombu's close copes
                log.info("pending receive not read at close (%s)", exc)
        if self._landing_queue is not None and not self.closed:
            try:
                with self.conn_or_acquire() as client:
                    self._trim(client)
                    restore(client, self.landing_key, self._landing_queue, force=True)
            except Exception as exc:  # noqa: BLE001 - Redis gone: another worker's sweep restores it
                log.info("landing list %s not restored at close (%s); a sweep will", self.landing_key, exc)
        super().close()


class Transport(kredis.Transport):
    Channel = Channel
