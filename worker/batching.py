"""Batching inside a Celery worker, acking only after the rows are committed.

Celery lets a task class replace its *strategy*: the function the worker's
consumer calls for every message of that task. :class:`BatchTask` installs a
strategy that buffers messages (count, token budget and max-wait, see
:class:`embedclf.batching.Batcher`) and processes a whole batch in the
worker's process: validate -> embed once -> heads -> one multi-row INSERT ->
ack every message of the batch. The batch runs on a helper thread
(:mod:`worker.runner`) while the event loop receives the next one. If the write fails for good, every message is
returned to the queue (nothing is acked that has no row).

Why not celery-batches: it acks a batch even when the batch function raised,
and stops flushing after a broker reconnect (its timer handle survives the
consumer restart). Here the strategy, its buffer and its timer are rebuilt on
every consumer (re)start, and acking is ours.

Run it with the solo pool (``worker_pool="solo"`` is the app default): the
embedder lives in the consuming process, loaded once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery import Task
from kombu.exceptions import ContentDisallowed, DecodeError

from embedclf.batching import Batcher
from embedclf.classify import classify_requests, error_row
from embedclf.payload import ClassifyRequest, PayloadError, clean_str, parse_request, salvage
from worker.resources import WorkerResources, get_resources, is_connection_error
from worker.runner import get_runner
from worker.transport import batched_acks

log = logging.getLogger(__name__)


@dataclass
class Pending:
    message: Any
    received_at: dt.datetime
    request: ClassifyRequest | None = None
    error: dict | None = None
    #: further error rows of the same task (one per head when a multi-head task gives up)
    more_errors: list[dict] = field(default_factory=list)

    @property
    def task_id(self) -> str:
        return self.request.task_id if self.request is not None else self.error["task_id"]  # type: ignore[index]

    def give_up(self, attempts: int) -> None:
        """Turn a task that keeps killing its worker into error rows: one per head it names."""
        message = (f"gave up after {attempts - 1} failed attempts: the worker died while processing this "
                   "task (crash, out of memory or kill)")
        if self.request is None:
            self.error = error_row(self.task_id, message)
            return
        r = self.request
        rows = [error_row(r.task_id, message, head_name=head, request_id=r.request_id, enqueued_at=r.enqueued_at)
                for head in r.heads]
        self.request, self.error, self.more_errors = None, rows[0], rows[1:]


def decode_message(message: Any, body: Any, max_text_chars: int, max_payload_bytes: int | None = None) -> Pending:
    """Turn one raw task message into a request or an error row (never raises).

    A raw body over ``max_payload_bytes`` is refused before its JSON is decoded.
    """
    now = dt.datetime.now(dt.timezone.utc)
    headers = message.headers or {}
    task_id = headers.get("id") if isinstance(headers, dict) else None
    if not isinstance(task_id, str) or not task_id:
        task_id = f"missing-id-{uuid.uuid4()}"
        return Pending(message, now, error=error_row(task_id, "message has no task id"))
    task_id = clean_str(task_id, 255)
    size = len(message.body) if isinstance(message.body, (bytes, str)) else 0
    if max_payload_bytes is not None and size > max_payload_bytes:
        return Pending(message, now, error=error_row(task_id, f"payload is {size} bytes (max {max_payload_bytes}, "
                                                              "EMBEDCLF_MAX_PAYLOAD_BYTES); not decoded"))
    try:
        if body is None:
            body = message.decode()
        if isinstance(body, dict) and "kwargs" in body:  # protocol 1
            args, kwargs = body.get("args", ()), body.get("kwargs", {})
        elif isinstance(body, (list, tuple)) and len(body) == 3:  # protocol 2
            args, kwargs, _embed = body
        else:
            raise PayloadError("message body is not a Celery task body [args, kwargs, embed]")
    except ContentDisallowed as exc:
        return Pending(message, now, error=error_row(task_id, f"rejected, not executed: {exc} (JSON only)"))
    except (DecodeError, ValueError, TypeError) as exc:
        return Pending(message, now, error=error_row(task_id, f"malformed message: {exc}"))
    try:
        return Pending(message, now, request=parse_request(task_id, args, kwargs, max_text_chars))
    except PayloadError as exc:
        return Pending(message, now, error=error_row(task_id, str(exc), **salvage(kwargs)))


def process_batch(pending: list[Pending], res: WorkerResources) -> int:
    """Classify and store a batch; returns rows inserted. Raises if the write fails."""
    requests = [p.request for p in pending if p.request is not None]
    heads = res.heads.snapshot(wanted={name for r in requests for name in r.heads})
    t0 = time.perf_counter()
    rows = classify_requests(requests, res.embedder, heads)
    res.metrics.inference.observe(time.perf_counter() - t0)
    rows += [row for p in pending if p.error is not None for row in (p.error, *p.more_errors)]
    received = {}
    for p in pending:
        received.setdefault(p.task_id, p.received_at)
    for row in rows:
        row["received_at"] = received.get(row["task_id"])
        row["worker"] = res.hostname
    t0 = time.perf_counter()
    inserted = res.write_rows(rows)
    m = res.metrics
    m.write.observe(time.perf_counter() - t0)
    now = dt.datetime.now(dt.timezone.utc)
    for row in rows:
        m.tasks.labels(row["status"]).inc()
        if row.get("enqueued_at") is not None:
            m.latency.observe(max(0.0, (now - row["enqueued_at"]).total_seconds()))
    return inserted


class BatchConsumer:
    """The strategy state of one consumer (re)start: buffer, timer, flush.

    Runs on the event loop's thread. The batch work (validate, embed, heads, INSERT)
    runs on the process's :class:`~worker.runner.BatchRunner` thread, one batch at a
    time, while this thread keeps receiving the next batch; acks and rejects happen
    back here once the rows are committed.
    """

    def __init__(self, task: "BatchTask", app: Any, consumer: Any) -> None:
        settings = task.settings
        self.res = get_resources(settings)
        self.res.embedder  # load the model now, before the first message  # noqa: B018
        self.count_tokens = self.res.embedder.token_counter()  # safe beside a running batch
        self.max_text_chars = settings.max_text_chars
        self.max_attempts = settings.max_attempts
        self.max_payload_bytes = settings.max_payload_bytes
        _serve_metrics_once(self.res, settings)
        self.connection_errors = getattr(consumer, "connection_errors", ())
        self.timer = consumer.timer
        self.batcher: Batcher[Pending] = Batcher(
            max_size=settings.batch.max_size,
            max_wait_s=settings.batch.max_wait_ms / 1000.0,
            max_tokens=settings.batch.max_tokens,
        )
        self.runner = get_runner()
        self.runner.stopping = False  # a (re)started consumer may start batches again
        self._poll_tref = self.runner.attach(getattr(consumer, "hub", None), self.timer)
        self._tref = None
        self._busy = False
        self.batches = 0

    def on_message(self, message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any) -> None:
        item = decode_message(message, body, self.max_text_chars, self.max_payload_bytes)
        tokens = 0
        if item.request is not None:
            tokens = self.count_tokens(item.request.text) or 0
        if self.batcher.add(item, tokens) and not self._busy:
            self.flush()
        self._arm_timer()

    def _arm_timer(self) -> None:
        if len(self.batcher) and self._tref is None:
            interval = max(0.002, self.batcher.max_wait_s / 4)
            self._tref = self.timer.call_repeatedly(interval, self.tick)

    def tick(self) -> None:
        if not self._busy and self.batcher.due():
            self.flush()
        if not len(self.batcher) and self._tref is not None:
            self._tref.cancel()  # idle: no timer until the next message
            self._tref = None

    def flush(self) -> None:
        """Hand the next batch to the runner thread (the caller checked it is idle)."""
        if self.runner.stopping:
            return  # shutting down: buffered messages go back to Redis when the connection closes
        items = self.batcher.take()
        if not items:
            return
        seen = self.res.attempts.peek([p.task_id for p in items])
        first, retried = [], []
        for p in items:
            n = seen.get(p.task_id, 0)
            if n >= self.max_attempts:
                p.give_up(n + 1)
                self.res.metrics.given_up.inc()
                first.append(p)
            elif n > 0:
                retried.append(p)
            else:
                first.append(p)
        # A task seen before was in a batch whose worker died: run it alone, so a poison
        # text only takes itself down, never the tasks that happened to share its batch.
        groups = ([first] if first else []) + [[p] for p in retried]
        self._busy = True
        self.runner.submit(lambda: [self._run(group) for group in groups], self._settle)

    def _run(self, items: list[Pending]) -> tuple[list[Pending], BaseException | None, int, float]:
        """On the runner thread: count the attempt, classify, write. Never raises."""
        started = time.perf_counter()
        try:
            self.res.attempts.begin([p.task_id for p in items])  # counted first: a crash leaves it counted
            return items, None, process_batch(items, self.res), started
        except Exception as exc:  # noqa: BLE001 - settled on the consuming thread
            log.exception("batch of %d failed; returning its messages to the queue", len(items))
            return items, exc, 0, started

    def _settle(self, outcomes: Any) -> None:
        """On the consuming thread: ack what was written, requeue what was not; next batch."""
        self._busy = False
        if isinstance(outcomes, BaseException):  # pragma: no cover - _run never raises
            outcomes = []
        for items, exc, inserted, started in outcomes:
            ids = [p.task_id for p in items]
            if exc is not None:
                # Every message goes back to the queue: none is acked without a row. If Postgres
                # was unreachable (past the write retries) that is not the tasks' fault, so the
                # attempt is given back; any other failure stays counted, and a task that keeps
                # failing ends as an error row after max_attempts instead of looping forever.
                if is_connection_error(exc):
                    self.res.attempts.undo(ids)
                self.res.metrics.requeued.inc(len(items))
                for p in items:
                    p.message.reject_log_error(log, self.connection_errors, requeue=True)
                continue
            with batched_acks([p.message for p in items]):
                for p in items:
                    p.message.ack_log_error(log, self.connection_errors)
            self.res.attempts.done(ids)
            self.res.metrics.batch_size.observe(len(items))
            self.batches += 1
            log.debug("batch %d: %d tasks, %d rows in %.1f ms", self.batches, len(items), inserted,
                      1000 * (time.perf_counter() - started))
        if self.batcher.due():
            self.flush()
        self._arm_timer()


_metrics_served: set[int] = set()


def _serve_metrics_once(res: WorkerResources, settings: Any) -> None:
    """Start this process's metrics server on the first consumer start (not again on reconnects)."""
    import os

    if settings.metrics_port and os.getpid() not in _metrics_served:
        res.metrics.serve(settings.metrics_port, settings.metrics_addr)
        _metrics_served.add(os.getpid())


class BatchTask(Task):
    """Base class of ``embedclf.classify``: the worker batches its messages."""

    settings: Any = None  # set by worker.tasks.register

    def Strategy(self, task: "BatchTask", app: Any, consumer: Any):  # noqa: N802 (Celery's name)
        return BatchConsumer(task, app, consumer).on_message

    def run(self, **kwargs: Any) -> dict:
        """Eager path (``task.apply``): classify one payload synchronously, store its row."""
        task_id = self.request.id or str(uuid.uuid4())
        res = get_resources(self.settings)
        now = dt.datetime.now(dt.timezone.utc)
        try:
            item = Pending(None, now, request=parse_request(task_id, (), kwargs, self.settings.max_text_chars))
        except PayloadError as exc:
            item = Pending(None, now, error=error_row(task_id, str(exc), **salvage(kwargs)))
        process_batch([item], res)
        return {"task_id": task_id}
