"""Messages a worker holds, kept in Redis so that a dead worker's messages come back.

One record per message: a message is either in the queue, or in exactly one worker's
*in-flight hash* (``tag -> raw bytes``), until its rows are committed. All moves are Lua
scripts (:mod:`worker.lua`), so each is atomic (works on Redis >= 6.2: ``RPOP key count``, no ``LMPOP``).

- :meth:`Inflight.receive` moves up to N messages from the queue's consuming end into the
  in-flight hash in one round trip and returns them (an oversized message is returned as
  its size and SHA-1 only: the worker never loads it).
- When the queue is empty, :meth:`Inflight.wait` blocks on ``BLMOVE queue landing``: the
  message lands in this worker's *landing list* (still one record) and the next receive
  moves it into the hash.
- :meth:`Inflight.ack` removes a committed batch in one ``HDEL``.
- A worker refreshes its *alive* key (TTL) from its own heartbeat thread, independent of
  batch progress; :meth:`Inflight.reap` returns a worker's messages to the queue only once
  that key has expired (the worker died).
- Attempts: before a batch is embedded the worker writes the batch's tags to its *busy* key (the
  next batch's tags replace them; the key is cleared when the worker goes idle, and before a write
  waits for Postgres; it expires after :data:`BUSY_TTL_S`, a TTL the heartbeat refreshes). When a
  dead worker's messages are returned, those in its busy batch are charged one death each, in the
  ``deaths`` hash (by SHA-1 of the message): only a worker death while a message was being processed
  counts. :meth:`receive` reports each message's deaths, so a poison message ends as an error row
  after ``EMBEDCLF_MAX_ATTEMPTS`` instead of killing workers forever.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from worker.lua import REAP as _REAP
from worker.lua import RECEIVE as _RECEIVE
from worker.lua import RELEASE as _RELEASE
from worker.lua import UNMARK as _UNMARK

log = logging.getLogger(__name__)

PREFIX = "embedclf:"
#: hash {worker id: JSON {queue, host, pid, started}}: every worker that may hold messages
REGISTRY = PREFIX + "workers"
#: hash {sha1 of a message: deaths}: messages whose worker died while processing them
DEATHS = PREFIX + "deaths"
#: messages per receive round trip, at most (Lua unpack limits stay far away)
MAX_RECEIVE = 1000
#: busy marks whose replies may wait unread on the marker connection: they are read all at once (one
#: read from the socket), not one per batch (each read costs the batch thread a GIL hand-over, ~0.5 ms)
MAX_PENDING_MARKS = 16
#: replies are also read before the next mark once this long has passed since the last read (they have long
#: arrived: no wait). redis-py health-checks a connection silent for ``health_check_interval`` (30 s here) with
#: a PING before its next command and reads one reply: a waiting SET's "OK" instead of "PONG" failed the check,
#: so a batch after a long one (a slow model, a Postgres outage) lost its mark
MARKS_READ_AFTER_S = 1.0
#: a busy mark expires this long after it was set or the heartbeat last refreshed it: a mark written after the
#: worker unregistered (a batch thread still stuck after the shutdown timeout) cannot stay behind for good.
#: Long, because a dead worker's mark must outlive its alive key until some worker reaps it (a crash-looping
#: worker can take minutes to come back); an expired mark costs at most one uncharged attempt
BUSY_TTL_S = 3600.0

@dataclass(slots=True)
class Entry:
    """One received message: its tag in the in-flight hash, deaths so far, raw size and bytes.

    ``raw`` is None for a message over the size limit; ``sha1`` is then its SHA-1 (hex) and
    ``tail`` its last 4 KB.
    """

    tag: int
    deaths: int
    size: int
    raw: bytes | None
    sha1: str | None = None
    tail: bytes = b""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Inflight:
    """One worker's in-flight records for one queue. ``client`` is a redis-py client (connection
    passed in); each thread that calls in should have its own client."""

    def __init__(self, client: Any, queue: str, wid: str | None = None, alive_ttl_s: float = 30.0,
                 busy_ttl_s: float = BUSY_TTL_S) -> None:
        self.client = client
        self.queue = queue
        self.wid = wid or worker_id()
        self.alive_ttl_s = alive_ttl_s
        self.busy_ttl_ms = max(1, int(busy_ttl_s * 1000))
        base = f"{PREFIX}w:{self.wid}:"
        self.inflight_key, self.landing_key = base + "inflight", base + "landing"
        self.alive_key, self.busy_key = base + "alive", base + "busy"
        self.tag_key = base + "tag"
        self._receive = client.register_script(_RECEIVE)
        self._reap = client.register_script(_REAP)
        self._release = client.register_script(_RELEASE)
        self._unmark = client.register_script(_UNMARK)
        self._next_tag = 1
        #: the batch thread's own connection for busy marks (see mark_busy)
        self._marker: Any = None
        self._marker_pending = 0
        self._marker_read_at = 0.0
        #: tags received and not yet acked or released: what this process knows it holds
        self._held: set[int] = set()
        self._held_lock = threading.Lock()
        #: a receive failed: it may have moved messages without this process seeing them
        self._unsure = False
        #: set by unregister(): no heartbeat may bring the worker back, no mark may be written after it
        self._closed = False
        self._life_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def register(self) -> None:
        info = json.dumps({"queue": self.queue, "host": socket.gethostname(), "pid": os.getpid(),
                           "started": time.time()})
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(REGISTRY, self.wid, info)
            pipe.set(self.alive_key, "1", px=int(self.alive_ttl_s * 1000))
            pipe.execute()

    def heartbeat(self) -> bool:
        """Refresh the alive key (and the busy mark's TTL); False when it had expired (others may have returned
        our messages). A no-op once :meth:`unregister` ran: a late beat must not register the worker again."""
        with self._life_lock:
            if self._closed:
                return True
            with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.alive_key, "1", px=int(self.alive_ttl_s * 1000), get=True)
                pipe.hsetnx(REGISTRY, self.wid, json.dumps({"queue": self.queue, "host": socket.gethostname(),
                                                            "pid": os.getpid(), "started": time.time()}))
                pipe.pexpire(self.busy_key, self.busy_ttl_ms)
                previous, _, _ = pipe.execute()
        return previous is not None

    def unregister(self) -> int:
        """Give every held message back (no death charged) and forget this worker; returns how many.

        After it, :meth:`heartbeat` and :meth:`mark_busy` write nothing: the heartbeat thread or a batch thread
        that outlived the shutdown timeout must not leave an alive key, a registry entry or a mark behind."""
        with self._life_lock:
            self._closed = True
            n, _ = self._run_reap(self.wid, self.queue, force=True)
        with self._held_lock:
            self._held.clear()
        self._drop_marker_conn()
        return n

    # -- receiving ---------------------------------------------------------------------------
    def receive(self, n: int, max_raw_bytes: int) -> list[Entry]:
        """Move up to ``n`` messages into the in-flight hash; one round trip. One thread calls this.

        A call that failed may have moved messages whose reply never came (Redis restarting, a cut
        connection): the next call first returns every entry this process does not hold to the queue,
        uncharged, so they are received again at once rather than at the next :meth:`resync`."""
        n = max(1, min(n, MAX_RECEIVE))
        if self._unsure:
            self._return_unseen()
        try:
            flat = self._receive(keys=[self.queue, self.inflight_key, self.landing_key, DEATHS, self.tag_key],
                                 args=[n, self._next_tag, max_raw_bytes])
        except Exception:
            self._unsure = True
            raise
        out = []
        for i in range(0, len(flat), 4):
            tag, deaths, size, payload = int(flat[i]), int(flat[i + 1]), int(flat[i + 2]), flat[i + 3]
            if size > max_raw_bytes:
                out.append(Entry(tag, deaths, size, None, payload[:40].decode("ascii"), payload[40:]))
            else:
                out.append(Entry(tag, deaths, size, payload))
        if out:
            with self._held_lock:  # together: resync() relies on it
                self._next_tag = out[-1].tag + 1
                self._held.update(e.tag for e in out)
        return out

    def wait(self, timeout_s: float) -> bool:
        """Block until a message arrives (it lands in the landing list); False on timeout."""
        return self.client.blmove(self.queue, self.landing_key, timeout_s, "RIGHT", "LEFT") is not None

    # -- processing --------------------------------------------------------------------------
    def mark_busy(self, tags: Iterable[int]) -> str:
        """These messages are being processed: a death now is charged to them. Returns the marker,
        for :meth:`clear_busy`; the next mark replaces it.

        The ``SET`` is written to a connection of its own and its reply read later (up to
        :data:`MAX_PENDING_MARKS` replies at once), so a batch does not wait a round trip for it: once written to
        the socket, the command reaches Redis even if this process dies the next instant (the kernel sends what
        was queued when it closes the socket).
        """
        token = ",".join(map(str, tags))
        if self._closed:  # unregistered: these messages were given back already
            return token
        conn = self._marker_conn()
        try:
            if self._marker_pending and (self._marker_pending >= MAX_PENDING_MARKS
                                         or time.monotonic() - self._marker_read_at >= MARKS_READ_AFTER_S):
                self._read_marks(conn)
            conn.send_command("SET", self.busy_key, token, "PX", self.busy_ttl_ms)
            self._marker_pending += 1
        except Exception:
            self._drop_marker_conn()
            raise
        return token

    def _read_marks(self, conn: Any) -> None:
        pending, self._marker_pending = self._marker_pending, 0
        for _ in range(pending):
            conn.read_response()
        self._marker_read_at = time.monotonic()

    def _marker_conn(self) -> Any:
        if self._marker is None:
            conn = self.client.connection_pool.make_connection()
            # connected here, not by its first command: a Sentinel-managed connection asks the sentinel for the
            # primary only in connect(); redis-py 8 connects an unconnected one's first command to its default
            # address (127.0.0.1:6379) instead, so the marks would miss the primary
            conn.connect()
            self._marker, self._marker_pending, self._marker_read_at = conn, 0, time.monotonic()
        return self._marker

    def _drop_marker_conn(self) -> None:
        if self._marker is not None:
            try:
                self._marker.disconnect()
            except Exception:  # noqa: BLE001
                pass
        self._marker, self._marker_pending = None, 0

    def clear_busy(self, token: str, from_marking_thread: bool = True) -> None:
        """Unmark, if the marker is still ``token`` (a later batch's marker stays).

        On the marking thread, the pending SET's reply is read first, so a mark is never cleared before it
        was set; another thread (the writer) skips that: the SET went out before it was handed the batch."""
        if from_marking_thread:
            self.flush_marks()
        self._unmark(keys=[self.busy_key], args=[token])

    def flush_marks(self) -> None:
        """Wait for the replies of the marks sent (only the thread that marks may call this)."""
        if self._marker is not None and self._marker_pending:
            try:
                self._read_marks(self._marker)
            except Exception:
                self._drop_marker_conn()
                raise

    def ack(self, tags: Sequence[int], sha1s: Sequence[str] = ()) -> None:
        """The rows of these messages are committed: drop them (one HDEL), and their death counts."""
        if not tags:
            return
        if not sha1s:
            self.client.hdel(self.inflight_key, *tags)
        else:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hdel(self.inflight_key, *tags)
                pipe.hdel(DEATHS, *sha1s)
                pipe.execute()
        self._forget(tags)

    def release(self, tags: Sequence[int]) -> int:
        """Return these messages to the queue's consuming end (not charged); oldest is taken first."""
        if not tags:
            return 0
        n = int(self._release(keys=[self.inflight_key, self.queue], args=sorted(tags, reverse=True)))
        self._forget(tags)
        return n

    def _forget(self, tags: Iterable[int]) -> None:
        with self._held_lock:
            self._held.difference_update(tags)

    def _return_unseen(self) -> None:
        """Return every in-flight entry this process does not hold (no receive runs meanwhile: same thread)."""
        n = self._release_unheld(below=None)
        if n:
            log.warning("returned %d message(s) moved by a receive whose reply was lost to the queue", n)
        self._unsure = False

    def resync(self) -> int:
        """Return to the queue the entries of this worker's in-flight hash that it no longer holds.

        Two ways to get such orphans: a receive whose reply was lost (Redis restarted or the connection
        dropped after the script ran: its messages sit under tags this worker never saw), and an ack
        (HDEL) undone by a failover to a replica that missed it, or a restart that lost the last second
        of the append-only file. They would stay there for the worker's lifetime; they go back to the
        queue (no attempt charged; rows already written are not written again). Returns how many.
        Safe on any thread: tags a receive is handing out right now lie at or above the horizon read first.
        """
        with self._held_lock:
            horizon = self._next_tag
        return self._release_unheld(below=horizon)

    def _release_unheld(self, below: int | None) -> int:
        """Return the hash's entries not held by this process (only tags under ``below``, if given)."""
        with self._held_lock:
            held = set(self._held)
        orphans = [t for t in map(int, self.client.hkeys(self.inflight_key))
                   if t not in held and (below is None or t < below)]
        if not orphans:
            return 0
        return int(self._release(keys=[self.inflight_key, self.queue], args=sorted(orphans, reverse=True)))

    def held(self) -> int:
        return int(self.client.hlen(self.inflight_key)) + int(self.client.llen(self.landing_key))

    # -- other workers -----------------------------------------------------------------------
    def reap(self) -> list[tuple[str, int, int]]:
        """Return the messages of every registered worker whose alive key expired.

        Returns ``(worker id, messages returned, deaths charged)`` per dead worker.
        """
        out: list[tuple[str, int, int]] = []
        registry = self.client.hgetall(REGISTRY)
        if not registry:
            return out
        with self.client.pipeline(transaction=False) as pipe:
            wids = [w.decode() if isinstance(w, bytes) else w for w in registry]
            for wid in wids:
                pipe.exists(f"{PREFIX}w:{wid}:alive")
            alive = pipe.execute()
        for wid, is_alive in zip(wids, alive):
            if is_alive or wid == self.wid:
                continue
            try:
                queue = json.loads(registry[wid.encode()] if wid.encode() in registry else registry[wid])["queue"]
            except (ValueError, KeyError, TypeError):
                queue = self.queue
            n, charged = self._run_reap(wid, queue, force=False)
            if n >= 0:
                out.append((wid, n, charged))
        return out

    def _run_reap(self, wid: str, queue: str, force: bool) -> tuple[int, int]:
        base = f"{PREFIX}w:{wid}:"
        n, charged = self._reap(keys=[base + "alive", base + "inflight", base + "landing", base + "busy",
                                      REGISTRY, DEATHS, queue, base + "tag"], args=[wid, "1" if force else "0"])
        return int(n), int(charged)
