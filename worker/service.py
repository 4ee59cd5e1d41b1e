"""A worker's classify pipeline, run inside the Celery worker by a consumer bootstep.

``celery -A worker.app worker`` stays the way to run a worker: Celery's consumer keeps the
broker connection for remote control (``celery inspect ping``, ``enable_events``, ``revoke``),
events and heartbeats, but it does not consume the classify queue. :class:`BulkReceive` (a
consumer bootstep, Celery's documented extension point) starts this module's
:class:`Service` instead: a receive thread, a batch thread, a write thread and a heartbeat
thread (see :mod:`worker.receiver` and :mod:`worker.pipeline`), all on this process's own
Redis connection pool.

The service is started once per process and outlives Celery's consumer restarts (a broker
reconnect restarts the consumer's steps; the service rides out Redis outages by itself). On a
warm shutdown it stops receiving, finishes the batch in hand and writes what was classified
(up to ``EMBEDCLF_SHUTDOWN_TIMEOUT_S``), then returns every other message it holds to the queue
at once, without charging an attempt.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import bootsteps

from embedclf.batching import Batcher
from embedclf.config import Settings
from worker import gctune
from worker.buffer import Buffer
from worker.events import TaskEvents
from worker.inflight import Inflight
from worker.intake import IntakeLimits, Received
from worker.pipeline import BatchLoop
from worker.receiver import Heartbeat, Receiver
from worker.refresher import HeadRefresher
from worker.resources import WorkerResources, get_resources, warn_mismatched_heads
from worker.results import ResultSender
from worker.writer import Job, Writer

log = logging.getLogger(__name__)


def _revoked() -> Any:
    from celery.worker import state

    return state.revoked


def apply_gil_switch(ms: float) -> float:
    """Set this process's GIL switch interval to ``ms`` milliseconds (0: leave it); returns the interval in
    effect, in seconds. A thread that waits for the GIL asks its holder to drop it after this long, so a
    shorter interval lets an embedding lane start its next model run sooner (docs/benchmarks.md)."""
    import sys

    if ms > 0:
        sys.setswitchinterval(ms / 1000.0)
    return sys.getswitchinterval()


#: the longest a starting worker waits for its model's warm-up before it receives anyway
WARM_UP_TIMEOUT_S = 120.0


class Service:
    def __init__(self, settings: Settings, res: WorkerResources | None = None, *, events: TaskEvents | None = None,
                 results: ResultSender | None = None, revoked: Any = _revoked) -> None:
        self.settings = settings
        self.res = res or get_resources(settings)
        self.events = events
        self.results = results
        self.revoked = revoked
        self.started = False
        self.stopped = False
        self._gc_tuned = False
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self.started:
                return
            self._start()
            self.started = True

    def _start(self) -> None:
        s, res = self.settings, self.res
        apply_gil_switch(s.gil_switch_ms)
        embedder = res.embedder  # load the model before the first message
        count_tokens = embedder.token_counter()
        try:  # and the active heads, when the database answers (if not, the first batch waits for it)
            warn_mismatched_heads(res.heads.snapshot().values(), embedder.model_id, s.embedder)
        except Exception as exc:  # noqa: BLE001
            log.warning("active heads not loaded at start (%s); the first batch will wait for the database",
                        " ".join(str(getattr(exc, "orig", None) or exc).split())[:200])
        self.inflight = Inflight(res.redis, s.queue, alive_ttl_s=s.heartbeat_ttl_s)
        self.inflight.register()
        from embedclf.checks import broker_persistence_warning

        warning = broker_persistence_warning(res.redis)
        if warning:
            log.warning("%s", warning)
        log.info("worker %s receives from queue %r in bulk (batch %d texts / %d ms / %d tokens)", self.inflight.wid,
                 s.queue, s.batch.max_size, s.batch.max_wait_ms, s.batch.max_tokens)
        batcher: Batcher[Received] = Batcher(max_size=s.batch.max_size, max_wait_s=s.batch.max_wait_ms / 1000.0,
                                             max_tokens=s.batch.max_tokens)
        self.buffer = Buffer(batcher, capacity=2 * s.batch.max_size)
        self.writer = Writer(res, self.inflight, after_commit=self._after_commit)
        self.batches = BatchLoop(res, self.buffer, self.inflight, self.writer, chunk_size=s.batch.max_size)
        limits = IntakeLimits(max_payload_bytes=s.max_payload_bytes, max_text_chars=s.max_text_chars,
                              max_texts=s.max_texts_per_task, max_attempts=s.max_attempts)
        self.receiver = Receiver(self.inflight, self.buffer, limits, count_tokens, revoked=self.revoked)
        interval = max(0.2, min(5.0, s.heartbeat_ttl_s / 4))
        self.heartbeat = Heartbeat(self.inflight, interval_s=interval, reap_s=max(interval, min(10.0,
                                                                                                s.heartbeat_ttl_s / 2)),
                                   on_tick=self._probe_database)
        self._db_ok_at: float | None = None
        self._db_error: str | None = None
        self._gc_tuned = gctune.tune(s.gc_threshold)  # after the model and heads loaded, before the threads start
        self.refresher = HeadRefresher(res.heads, s.head_refresh_s)
        self.heartbeat.start()
        self.refresher.start()
        self.writer.start()
        self.batches.start(warm_up_timeout_s=WARM_UP_TIMEOUT_S)  # ready once the model has run once
        self.receiver.start()

    def _after_commit(self, job: Job, result: Any) -> None:
        if self.results is not None:
            self.results.send(job.items, job.rows, {c.task_id for c in result.conflicts})
        if self.events is not None:
            self.events.batch(job.items, job.rows, time.perf_counter() - job.started)

    def stop(self, graceful: bool = True, timeout_s: float | None = None) -> None:
        """Stop receiving; finish (graceful) or abandon the batch in hand; give back every other message."""
        with self._lock:
            if not self.started or self.stopped:
                return
            self.stopped = True
        timeout_s = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        self.receiver.stop()
        unstarted = self.buffer.close()
        if not graceful:
            self.writer.abort.set()
        self.batches.stop_event.set()
        self.batches.thread.join(max(0.0, deadline - time.monotonic()) if graceful else 1.0)
        if self.batches.thread.is_alive():
            log.warning("shutdown: a batch still runs after %.0fs; its messages go back to the queue", timeout_s)
        self.batches.close()
        if not self.writer.finish(max(0.1, deadline - time.monotonic()) if graceful else 1.0):
            self.writer.abort.set()
            log.warning("shutdown: rows not written within %.0fs; their messages go back to the queue", timeout_s)
        if self.events is not None:
            self.events.close()
        try:
            n = self.inflight.unregister()
            log.info("shutdown: returned %d message(s) to the queue (%d were waiting for a batch)", n, len(unstarted))
        except Exception as exc:  # noqa: BLE001 - Redis gone: they come back once the heartbeat expires
            log.warning("shutdown: could not return held messages now (%s); they come back once this worker's "
                        "heartbeat expires", exc)
        self.heartbeat.stop()
        self.refresher.stop()
        if self._gc_tuned:
            gctune.restore()

    def _probe_database(self) -> None:
        """Readiness: does Postgres answer (a cheap query)? Load the heads if none are loaded yet."""
        from embedclf.store.repository import active_versions

        try:
            active_versions(self.res.engine)
            if not self.res.heads.loaded():
                self.res.heads.snapshot()
        except Exception as exc:  # noqa: BLE001
            self._db_error = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
            return
        self._db_ok_at, self._db_error = time.monotonic(), None

    def live(self) -> tuple[bool, dict]:
        """Liveness: the pipeline's threads run and the broker answered within the heartbeat TTL."""
        if not self.started or self.stopped:
            return False, {"reason": "not started" if not self.started else "stopping"}
        threads = {"receive": self.receiver.thread.is_alive(), "batch": self.batches.thread.is_alive(),
                   "write": self.writer.alive(), "heartbeat": self.heartbeat.thread.is_alive()}
        dead = [name for name, alive in threads.items() if not alive]
        age = time.monotonic() - max(self.receiver.last_ok, self.heartbeat.last_ok)
        ok = not dead and age < self.settings.heartbeat_ttl_s
        return ok, {"dead_threads": dead, "broker_ok_age_s": round(age, 1), "worker_id": self.inflight.wid}

    def ready(self) -> tuple[bool, dict]:
        """Readiness: live, Postgres answered recently, and heads are loaded."""
        live, detail = self.live()
        if not self.started:
            return False, detail
        age = None if self._db_ok_at is None else time.monotonic() - self._db_ok_at
        db_ok = age is not None and age < max(10.0, 3 * self.heartbeat.interval_s) and self._db_error is None
        heads = sorted(self.res.heads.names())
        heads_age = self.res.heads.age_s()
        detail.update(database_ok=db_ok, database_error=self._db_error, heads=heads,
                      broken_heads=dict(self.res.heads.broken),
                      heads_age_s=None if heads_age is None else round(heads_age, 1))
        return live and db_ok and bool(heads), detail

    def status(self) -> dict:
        """For liveness/readiness probes and tests."""
        now = time.monotonic()
        return {
            "worker_id": self.inflight.wid if self.started else None,
            "receiving": self.started and self.receiver.thread.is_alive(),
            "broker_ok_age_s": round(now - max(self.receiver.last_ok, self.heartbeat.last_ok),
                                     1) if self.started else None,
            "heads": sorted(self.res.heads.names()) if self.started else [],
            "broken_heads": dict(self.res.heads.broken) if self.started else {},
            "batches": self.writer.batches if self.started else 0,
        }


_service: tuple[int, Service] | None = None


def get_service(settings: Settings, **kwargs: Any) -> Service:
    """This process's service (one per process, built on first use, never at import)."""
    global _service
    if _service is None or _service[0] != os.getpid():
        _service = (os.getpid(), Service(settings, **kwargs))
    return _service[1]


_metrics_served: set[int] = set()


def serve_metrics_once(service: Service, settings: Settings) -> None:
    """The metrics port (with /livez and /readyz), once per process, when EMBEDCLF_METRICS_PORT is set."""
    if settings.metrics_port and os.getpid() not in _metrics_served:
        service.res.metrics.serve(settings.metrics_port, settings.metrics_addr, live=service.live,
                                  ready=service.ready)
        _metrics_served.add(os.getpid())


class BulkReceive(bootsteps.StartStopStep):
    """Consumer bootstep: runs :class:`Service` (the classify queue's receive loop) in this worker."""

    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.service: Service | None = None

    def start(self, c: Any) -> None:
        settings: Settings = c.app.conf.embedclf_settings
        events = TaskEvents(c.app, c.hostname, c)
        results = ResultSender(c.app, store=bool(settings.result_backend))
        self.service = get_service(settings, events=events, results=results)
        if self.service.events is not None:
            self.service.events.consumer = c  # a restarted consumer has a new event dispatcher
        self.service.start()
        serve_metrics_once(self.service, settings)

    def _shutting_down(self, c: Any) -> bool:
        from celery.bootsteps import CLOSE, TERMINATE

        return getattr(c.blueprint, "state", None) in (CLOSE, TERMINATE)

    def stop(self, c: Any) -> None:
        # a broker reconnect restarts the consumer's steps: the service keeps running then
        if self.service is not None and self._shutting_down(c):
            self.service.stop(graceful=True)

    def shutdown(self, c: Any) -> None:
        if self.service is not None:
            self.service.stop(graceful=True)

    def terminate(self, c: Any) -> None:
        if self.service is not None:
            self.service.stop(graceful=False)
