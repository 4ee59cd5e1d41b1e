"""Producer client: enqueue ``embedclf.classify`` tasks fast, with nothing but Redis.

The messages are ordinary Celery task messages (protocol 2, JSON, exactly what
``Celery.send_task`` writes), so workers, ``celery`` tooling and plain ``send_task`` producers
mix freely. What this client adds:

- **Handles.** :meth:`Client.classify` returns a :class:`~embedclf.handles.TaskHandle`,
  :meth:`Client.classify_many` a :class:`~embedclf.handles.TextHandle` per text (``task_id``,
  ``item``): ``.get(timeout)`` waits for the result through the Celery result backend
  (``result_backend=``) or Postgres (``database_url=``, LISTEN/NOTIFY); :meth:`Client.wait` waits
  for many together.
- **Multi-text tasks.** :meth:`Client.classify_many` packs texts into ``texts=[...]`` tasks of up to
  ``per_task`` texts (default 256, at most ``EMBEDCLF_MAX_TEXTS_PER_TASK``), split further so that
  no message exceeds ``EMBEDCLF_MAX_PAYLOAD_BYTES``.
- **Bulk sends.** Messages go out in chunks, each chunk in one Lua call that pushes all of its
  messages with one ``LPUSH``: one round trip per chunk instead of one per task.
- **Exactly-once enqueue across broker outages.** Each chunk carries a random marker key that the
  same Lua call sets (``SET NX EX``) before it pushes. A chunk whose reply was lost (the
  connection broke) is retried, and the marker makes the retry a no-op if the first try had in
  fact been applied. The client retries an unreachable broker until it has been down for
  ``enqueue_retry_s`` seconds in a row, then raises :class:`BrokerUnavailable`, whose ``sent``
  lists the task ids enqueued before.
- **Replication.** With ``wait_replicas=N`` (``EMBEDCLF_ENQUEUE_WAIT_REPLICAS``), each push waits until
  N replicas have it (``WAIT``) and is pushed again (a no-op when it was kept) if they have not: a
  failover of the primary then loses no task the client reported as sent.
- **Payload limit.** Messages are built and measured before anything of the call is sent: a
  single text too large for one message raises :class:`PayloadTooLarge` and nothing is sent.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from embedclf.config import Settings, check_broker_url, mask_url, redact
from embedclf.envelope import encode
from embedclf.errors import BrokerUnavailable, EnqueueError, NotReplicated, PayloadTooLarge  # noqa: F401  (re-exported: defined in errors.py)
from embedclf.handles import BackendSource, NoSource, PostgresSource, ResultSource, TaskHandle, TextHandle, wait_all
from embedclf.payload import TASK_NAME

log = logging.getLogger(__name__)

#: texts per multi-text task that classify_many uses unless told otherwise
DEFAULT_PER_TASK = 256
#: messages per Lua push (one round trip); well under Lua's unpack limit
CHUNK_MESSAGES = 200
#: bytes per Lua push, roughly
CHUNK_BYTES = 4 * 1024 * 1024
#: with wait_replicas: how long to wait for the replicas' acknowledgement of a push (ms)
REPLICA_WAIT_MS = 2000
#: how long a chunk's marker key lives (a retry after longer could push the chunk twice)
MARKER_TTL_S = 3600
MARKER_PREFIX = "embedclf:sent:"

_PUSH = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('LPUSH', KEYS[1], unpack(ARGV, 2))
end
return -1
"""

_RETRYABLE_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "OOM")


def head_kwargs(head: str | Sequence[str]) -> dict:
    """``{"head": name}`` for one name, ``{"heads": [names]}`` for a list (one embedding, a row per head)."""
    return {"head": head} if isinstance(head, str) else {"heads": list(head)}


def body_size(kwargs: dict) -> int | None:
    """Bytes of the JSON task body for ``kwargs`` (None if it is not JSON-serializable)."""
    try:
        return len(json.dumps([[], kwargs, {}]).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError):
        return None


class _Outage:
    """Tracks how long the broker has been unreachable; raises past the bound."""

    def __init__(self, limit_s: float, url: str) -> None:
        self.limit_s, self.url = limit_s, url
        self.since: float | None = None
        self.tries = 0

    def failed(self, exc: BaseException, sent: list[str]) -> float:
        now = time.monotonic()
        reason = " ".join(redact(str(exc), self.url).split())[:200]
        if self.since is None:
            self.since = now
            log.warning("broker %s unreachable (%s); retrying for up to %gs", mask_url(self.url), reason, self.limit_s)
        if now - self.since >= self.limit_s:
            raise BrokerUnavailable(
                f"broker at {mask_url(self.url)} unreachable for {now - self.since:.1f}s "
                f"(retry limit {self.limit_s:g}s, EMBEDCLF_ENQUEUE_RETRY_S): {reason}; "
                f"{len(sent)} task(s) were enqueued before that", list(sent)) from None
        self.tries += 1
        return min(1.0, 0.1 * self.tries)

    def ok(self) -> None:
        if self.since is not None:
            log.warning("broker %s is back after %.1fs", mask_url(self.url), time.monotonic() - self.since)
        self.since, self.tries = None, 0


class Client:
    def __init__(self, broker_url: str, queue: str = "celery", *,
                 result_backend: str | None = None,
                 database_url: str | None = None,
                 enqueue_retry_s: float = Settings.enqueue_retry_s,
                 max_payload_bytes: int = Settings.max_payload_bytes,
                 max_texts_per_task: int = Settings.max_texts_per_task,
                 sentinel_master: str = Settings.broker_sentinel_master,
                 wait_replicas: int = Settings.enqueue_wait_replicas) -> None:
        """``result_backend``: the workers' ``EMBEDCLF_RESULT_BACKEND``; else ``database_url`` (needs
        psycopg2): where handles wait for results. Neither: handles cannot wait (enqueue only)."""
        check_broker_url(broker_url, "broker_url")
        self.broker_url = broker_url
        self.queue = queue
        self.enqueue_retry_s = enqueue_retry_s
        self.max_payload_bytes = max_payload_bytes
        self.max_texts_per_task = max_texts_per_task
        self.result_backend, self.database_url = result_backend, database_url
        self.sentinel_master, self.wait_replicas = sentinel_master, wait_replicas
        self._source: ResultSource | None = None
        self._redis: Any = None
        self._push: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        return cls(settings.broker_url, settings.queue, result_backend=settings.result_backend or None,
                   database_url=settings.database_url, enqueue_retry_s=settings.enqueue_retry_s,
                   max_payload_bytes=settings.max_payload_bytes, max_texts_per_task=settings.max_texts_per_task,
                   sentinel_master=settings.broker_sentinel_master, wait_replicas=settings.enqueue_wait_replicas)

    @property
    def source(self) -> ResultSource:
        """Where handles wait for results (made on first use)."""
        if self._source is None:
            if self.result_backend:
                self._source = BackendSource(self.broker_url, self.result_backend)
            elif self.database_url:
                self._source = PostgresSource(self.database_url)
            else:
                self._source = NoSource()
        return self._source

    @property
    def redis(self) -> Any:
        if self._redis is None:
            from embedclf.redis_conn import redis_client

            self._redis = redis_client(self.broker_url, health_check_interval=0, sentinel_master=self.sentinel_master)
            self._push = self._redis.register_script(_PUSH)
        return self._redis

    # -- public API ------------------------------------------------------------------------
    def classify(self, head: str | Sequence[str], text: str, request_id: str | int | None = None,
                 task_id: str | None = None) -> TaskHandle:
        """Enqueue one text as a ``text=`` task; returns its handle (``.task_id``, ``.get(timeout)``)."""
        ids = [task_id] if task_id is not None else None
        [h] = self.classify_many(head, [text], [request_id], task_ids=ids, per_task=1)
        return TaskHandle(h.task_id, h.single, self.source)

    def wait(self, handles: Sequence[TaskHandle | TextHandle], timeout: float | None = None) -> list[Any]:
        """The results of many handles, waited for together (a failed task: its ClassificationError)."""
        return wait_all(handles, timeout)

    def get(self, task_id: str, timeout: float | None = None, *, single: bool = False) -> Any:
        """The result of any task by id (``single``: it had one text and one head)."""
        return TaskHandle(task_id, single, self.source).get(timeout)

    def classify_many(
        self,
        head: str | Sequence[str],
        texts: Sequence[object],
        request_ids: Sequence[str | int | None] | None = None,
        *,
        task_ids: Sequence[str] | None = None,
        per_task: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[TextHandle]:
        """Enqueue many texts; returns a handle per text (``task_id``, ``item``, ``.get()``), in input order.

        ``per_task`` texts go into one ``texts=[...]`` task (1: one ``text=`` task per text).
        ``task_ids`` (one per text) chooses the ids and implies ``per_task=1``.
        Raises :class:`PayloadTooLarge` (nothing sent) or :class:`BrokerUnavailable`.
        """
        if request_ids is not None and len(request_ids) != len(texts):
            raise ValueError("request_ids must have one entry per text")
        if task_ids is not None:
            if len(task_ids) != len(texts):
                raise ValueError("task_ids must have one entry per text")
            if per_task not in (None, 1):
                raise ValueError("task_ids name one task per text: per_task must be 1")
            per_task = 1
        per_task = min(per_task or DEFAULT_PER_TASK, self.max_texts_per_task)
        rids = list(request_ids) if request_ids is not None else [None] * len(texts)
        messages: list[tuple[str, bytes, int]] = []  # (task id, envelope, texts)
        refs: list[TextHandle] = []
        one_head = isinstance(head, str) or len(head) == 1
        source = self.source
        now = time.time()
        if per_task == 1:
            for i, (text, rid) in enumerate(zip(texts, rids)):
                tid = task_ids[i] if task_ids is not None else str(uuid.uuid4())
                kwargs = {**head_kwargs(head), "text": text, "enqueued_at": now}
                if rid is not None:
                    kwargs["request_id"] = rid
                messages.append((tid, self._envelope(tid, kwargs), 1))
                refs.append(TextHandle(tid, 0, one_head, source))
        else:
            start = 0
            while start < len(texts):
                stop = min(len(texts), start + per_task)
                while True:
                    tid = str(uuid.uuid4())
                    kwargs = {**head_kwargs(head), "texts": list(texts[start:stop]), "enqueued_at": now}
                    if any(r is not None for r in rids[start:stop]):
                        kwargs["request_ids"] = list(rids[start:stop])
                    try:
                        raw = encode(TASK_NAME, tid, kwargs, self.queue)
                    except (TypeError, ValueError) as exc:
                        raise EnqueueError(f"texts {start}-{stop - 1}: not JSON-serializable: {exc}") from None
                    if len(raw) <= self.max_payload_bytes or stop - start == 1:
                        break
                    stop = start + max(1, (stop - start) // 2)  # too big: fewer texts in this task
                if len(raw) > self.max_payload_bytes:
                    raise PayloadTooLarge(f"text {start}: payload is {len(raw)} bytes (max {self.max_payload_bytes}, "
                                          "EMBEDCLF_MAX_PAYLOAD_BYTES); nothing was enqueued")
                messages.append((tid, raw, stop - start))
                refs.extend(TextHandle(tid, i, False, source) for i in range(stop - start))
                start = stop
        try:
            self._send(messages, progress)
        except BrokerUnavailable as exc:
            sent = set(exc.sent)
            exc.refs = [r for r in refs if r.task_id in sent]
            raise
        return refs

    def _envelope(self, tid: str, kwargs: dict) -> bytes:
        try:
            raw = encode(TASK_NAME, tid, kwargs, self.queue)
        except (TypeError, ValueError) as exc:
            raise EnqueueError(f"task {tid}: kwargs are not JSON-serializable: {exc}") from None
        if len(raw) > self.max_payload_bytes:
            raise PayloadTooLarge(f"task {tid}: payload is {len(raw)} bytes (max {self.max_payload_bytes}, "
                                  "EMBEDCLF_MAX_PAYLOAD_BYTES); nothing was enqueued")
        return raw

    def _send(self, messages: list[tuple[str, bytes, int]], progress: Callable[[int], None] | None) -> None:
        outage = _Outage(self.enqueue_retry_s, self.broker_url)
        sent: list[str] = []
        start = 0
        while start < len(messages):
            stop, size = start, 0
            while stop < len(messages) and stop - start < CHUNK_MESSAGES and (stop == start or size < CHUNK_BYTES):
                size += len(messages[stop][1])
                stop += 1
            chunk = messages[start:stop]
            marker = MARKER_PREFIX + uuid.uuid4().hex
            while True:
                try:
                    _ = self.redis
                    self._push(keys=[self.queue, marker], args=[MARKER_TTL_S, *[m[1] for m in chunk]])
                    if self.wait_replicas:
                        acked = int(self.redis.wait(self.wait_replicas, REPLICA_WAIT_MS))
                        if acked < self.wait_replicas:  # not durable yet: push again (the marker dedupes)
                            raise NotReplicated(f"{acked} of {self.wait_replicas} replicas acknowledged the "
                                                f"push within {REPLICA_WAIT_MS} ms")
                    outage.ok()
                    break
                except Exception as exc:  # noqa: BLE001 - classified below
                    if not _retryable(exc):
                        raise EnqueueError(f"broker at {mask_url(self.broker_url)} refused the tasks: "
                                           f"{' '.join(redact(str(exc), self.broker_url).split())[:200]}") from None
                    time.sleep(outage.failed(exc, sent))
            sent.extend(m[0] for m in chunk)
            if progress is not None:
                progress(sum(m[2] for m in chunk))
            start = stop

    def wait_for_broker(self) -> None:
        """Return once the broker answers; raise :class:`BrokerUnavailable` after ``enqueue_retry_s``."""
        outage = _Outage(self.enqueue_retry_s, self.broker_url)
        while True:
            try:
                self.redis.ping()
                return
            except Exception as exc:  # noqa: BLE001
                if not _retryable(exc):
                    raise EnqueueError(f"broker at {mask_url(self.broker_url)}: "
                                       f"{' '.join(redact(str(exc), self.broker_url).split())[:200]}") from None
                time.sleep(outage.failed(exc, []))

    def queue_depth(self) -> int:
        return int(self.redis.llen(self.queue))

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        if self._source is not None:
            self._source.close()
            self._source = None


def _retryable(exc: BaseException) -> bool:
    import redis

    if isinstance(exc, NotReplicated):
        return True
    if isinstance(exc, redis.AuthenticationError):
        return False
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError, OSError)):
        return True
    if isinstance(exc, redis.ResponseError):
        return str(exc).split(" ", 1)[0].upper() in _RETRYABLE_REPLIES
    return False
