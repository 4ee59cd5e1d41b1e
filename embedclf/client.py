"""Producer helper: enqueue classify tasks with nothing but Celery and JSON.

Equivalent to ``Celery(broker=URL).send_task("embedclf.classify", kwargs={...})``;
this helper adds ``enqueued_at`` (for latency figures), reuses one producer
connection for bulk sends, and returns the task ids (the ``task_id`` of each
result row).

Broker outages: every publish is retried (kombu's ``retry=True`` publish path:
reconnect, revive the producer, publish the same message again) until the broker
has been unreachable for ``enqueue_retry_s`` seconds in a row; then
:class:`BrokerUnavailable` says how many tasks were enqueued before it. Task ids
are fixed before the first try, so a retried publish re-sends the same task id;
in the rare case where Redis stored a message but the connection died before
its reply, the task is queued twice and still gets one row (writes are
idempotent on ``task_id``).

Payloads whose serialized body exceeds ``max_payload_bytes`` are refused with
:class:`PayloadTooLarge` before anything of the call is sent.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Callable, Iterable, Sequence

from celery import Celery

from embedclf.config import Settings, mask_url
from embedclf.payload import TASK_NAME

log = logging.getLogger(__name__)

#: what Celery's protocol 2 puts next to args and kwargs in a task body
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class EnqueueError(RuntimeError):
    """A task could not be enqueued."""


class BrokerUnavailable(EnqueueError):
    """The broker stayed unreachable longer than the retry bound."""

    def __init__(self, message: str, sent: list[str]) -> None:
        super().__init__(message)
        #: ids of the tasks enqueued before the broker went away (in order)
        self.sent = sent


class PayloadTooLarge(EnqueueError, ValueError):
    """A task body is larger than the payload limit; nothing was sent."""


def body_size(kwargs: dict) -> int | None:
    """Bytes of the JSON task body Celery sends for ``kwargs`` (None if it is not JSON-serializable)."""
    from kombu.utils.json import dumps

    try:
        return len(dumps([[], kwargs, _EMBED]).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError):
        return None


def head_kwargs(head: str | Sequence[str]) -> dict:
    """``{"head": name}`` for one name, ``{"heads": [names]}`` for a list (one embedding, a row per head)."""
    return {"head": head} if isinstance(head, str) else {"heads": list(head)}


class _OutageClock:
    """Errback for kombu's retry loops: raise once the broker has been down for ``limit_s``."""

    def __init__(self, limit_s: float, url: str) -> None:
        self.limit_s, self.url = limit_s, url
        self.since: float | None = None
        self.sent: list[str] = []

    def __call__(self, exc: BaseException, interval: float = 0) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log.info("broker %s unreachable (%s); retrying for up to %gs", mask_url(self.url),
                        " ".join(str(exc).split())[:200], self.limit_s)
        if now - self.since >= self.limit_s:
            reason = " ".join(str(exc).split())[:200]
            raise BrokerUnavailable(
                f"broker at {mask_url(self.url)} unreachable for {now - self.since:.1f}s "
                f"(retry limit {self.limit_s:g}s, EMBEDCLF_ENQUEUE_RETRY_S): {reason}; "
                f"{len(self.sent)} task(s) were enqueued before that", list(self.sent)) from None

    def ok(self) -> None:
        self.since = None


class Client:
    def __init__(self, broker_url: str, queue: str = "celery", *,
                 enqueue_retry_s: float = Settings.enqueue_retry_s,
                 max_payload_bytes: int = Settings.max_payload_bytes) -> None:
        self.broker_url = broker_url
        self.queue = queue
        self.enqueue_retry_s = enqueue_retry_s
        self.max_payload_bytes = max_payload_bytes
        self.app = Celery("embedclf-client", broker=broker_url, set_as_current=False)
        self.app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True,
                             broker_transport_options={"socket_connect_timeout": 5})

    @classmethod
    def from_settings(cls, settings: Settings) -> "Client":
        return cls(settings.broker_url, settings.queue, enqueue_retry_s=settings.enqueue_retry_s,
                   max_payload_bytes=settings.max_payload_bytes)

    def classify(self, head: str, text: str, request_id: str | None = None, task_id: str | None = None) -> str:
        """Enqueue one text; returns its task id."""
        return self.classify_many(head, [text], [request_id], [task_id] if task_id else None)[0]

    def classify_many(
        self,
        head: str | Sequence[str],
        texts: Sequence[object],
        request_ids: Sequence[str | None] | None = None,
        task_ids: Sequence[str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Enqueue many texts over one connection; returns their task ids in order.

        Raises :class:`PayloadTooLarge` (nothing sent) or :class:`BrokerUnavailable`.
        """
        ids = list(task_ids) if task_ids is not None else [str(uuid.uuid4()) for _ in texts]
        rids: Iterable[str | None] = request_ids if request_ids is not None else [None] * len(texts)
        payloads = []
        for tid, text, rid in zip(ids, texts, rids):
            kwargs: dict = {**head_kwargs(head), "text": text, "enqueued_at": time.time()}
            if rid is not None:
                kwargs["request_id"] = rid
            size = body_size(kwargs)
            if size is not None and size > self.max_payload_bytes:
                raise PayloadTooLarge(f"task {tid}: payload is {size} bytes (max {self.max_payload_bytes}, "
                                      "EMBEDCLF_MAX_PAYLOAD_BYTES); nothing was enqueued")
            payloads.append((tid, kwargs))
        clock = _OutageClock(self.enqueue_retry_s, self.broker_url)
        policy = {"max_retries": None, "interval_start": 0, "interval_step": 0.5, "interval_max": 1,
                  "errback": clock}
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(errback=clock, max_retries=None, interval_start=0, interval_step=0.5,
                                   interval_max=1)
            clock.ok()
            producer = conn.Producer()
            for n, (tid, kwargs) in enumerate(payloads, 1):
                kwargs["enqueued_at"] = time.time()  # same size as the checked placeholder
                self.app.send_task(TASK_NAME, kwargs=kwargs, task_id=tid, queue=self.queue, producer=producer,
                                   retry=True, retry_policy=policy)
                clock.ok()
                clock.sent.append(tid)
                if progress is not None and (n % 100 == 0 or n == len(ids)):
                    progress(100 if n % 100 == 0 else n % 100)
        return ids

    def wait_for_broker(self) -> None:
        """Return once the broker answers; raise :class:`BrokerUnavailable` after ``enqueue_retry_s``."""
        clock = _OutageClock(self.enqueue_retry_s, self.broker_url)
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(errback=clock, max_retries=None, interval_start=0, interval_step=0.5,
                                   interval_max=1)

    def queue_depth(self) -> int:
        with self.app.connection_for_write() as conn:
            return conn.default_channel.client.llen(self.queue)

    def close(self) -> None:
        self.app.close()
