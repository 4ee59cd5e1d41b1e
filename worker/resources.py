"""Per-process worker resources: engine, embedder, active heads.

Created lazily on first use in the process that serves tasks (the solo pool's
only process), never at import time and never shared across a fork.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from embedclf.classify import LoadedHead
from embedclf.config import Settings
from embedclf.embedders.base import Embedder
from embedclf.embedders.spec import load_embedder, mismatch_advice
from embedclf.store import repository
from embedclf.store.db import make_engine
from embedclf.store.results import WriteResult, write_results
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


#: with a background refresher (:class:`worker.refresher.HeadRefresher`) the batch thread polls Postgres itself
#: only once the last refresh is this many intervals old (the refresher is stuck: Postgres hangs or is down)
BACKGROUND_STALE_FACTOR = 3.0


class HeadCache:
    """Snapshot of active heads, refreshed by a cheap poll of ``{name: version}``.

    The worker refreshes it on a thread of its own (:class:`worker.refresher.HeadRefresher`: :attr:`background`),
    so the batch thread neither waits for the poll nor for a new version's load (a hot swap no longer stalls
    the model); it still refreshes itself for a head name it does not know (at most once a second), and when
    the background refreshes have stopped for :data:`BACKGROUND_STALE_FACTOR` intervals.

    A head version that cannot be loaded (a config key from a newer release, corrupt weights) is
    isolated: it is listed in :attr:`broken` with the reason, logged once and counted in
    ``embedclf_head_load_failures_total``; its tasks get error rows naming it while every other
    head is served. It is tried again when its active version changes.
    """

    def __init__(self, engine: Engine, refresh_s: float, clock: Callable[[], float] = time.monotonic,
                 on_broken: Callable[[str, int, str], None] | None = None) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self.clock = clock
        self.on_broken = on_broken
        self._heads: dict[str, LoadedHead] = {}
        #: {name: reason} of active heads that cannot be loaded
        self.broken: dict[str, str] = {}
        self._broken_versions: dict[str, int] = {}
        self._checked_at: float | None = None
        #: when a refresh last succeeded (``clock()``), for :meth:`age_s`
        self._refreshed_at: float | None = None
        #: one refresh at a time (batch thread, refresher, readiness probe); readers do not take it
        self._lock = threading.Lock()
        #: a refresher thread keeps the heads fresh: :meth:`snapshot` does not poll while they are
        self.background = False

    def refresh(self) -> None:
        """Poll the active versions, load the new ones; the new set replaces the old in one assignment (a reader
        sees one or the other). Callers hold the lock (:meth:`refresh_now`)."""
        active = repository.active_versions(self.engine)
        heads: dict[str, LoadedHead] = {}
        broken: dict[str, str] = {}
        for name, version in active.items():
            current = self._heads.get(name)
            if current is not None and current.version == version:
                heads[name] = current
                continue
            if self._broken_versions.get(name) == version:
                broken[name] = self.broken[name]
                continue
            try:
                meta, artifact = repository.load_head(self.engine, name, version)
                module = artifact.build()
            except DBAPIError:
                raise
            except Exception as exc:  # noqa: BLE001 - any load failure isolates this head only
                reason = f"v{version}: {type(exc).__name__}: {exc}"[:500]
                broken[name] = reason
                self._broken_versions[name] = version
                self.broken[name] = reason
                log.error("head %s v%d cannot be loaded (%s); its tasks get error rows, other heads are served",
                          name, version, reason)
                if self.on_broken is not None:
                    self.on_broken(name, version, reason)
                continue
            heads[name] = LoadedHead(name, version, artifact.embedder_id, artifact.labels, module)
            log.info("loaded head %s v%d (%d labels, embedder %s)", name, version, len(artifact.labels),
                     artifact.embedder_id)
        self._heads = heads
        self.broken = broken
        self._broken_versions = {n: v for n, v in self._broken_versions.items() if n in broken}
        self._checked_at = self._refreshed_at = self.clock()

    def age_s(self) -> float | None:
        """Seconds since the active heads were last read from Postgres (None: never): readiness shows it, so a
        refresher that cannot reach Postgres is visible."""
        done = self._refreshed_at
        return None if done is None else self.clock() - done

    def loaded(self) -> bool:
        return bool(self._heads)

    def names(self) -> list[str]:
        return list(self._heads)

    def cached(self) -> dict[str, LoadedHead]:
        """The heads loaded so far, without asking the database (nor waiting for a refresh that runs)."""
        return dict(self._heads)

    def refresh_now(self) -> None:
        """Refresh now (the background refresher's call); waits for a refresh already running."""
        with self._lock:
            self.refresh()

    def _due(self, wanted: Iterable[str], max_age_s: float) -> bool:
        checked = self._checked_at
        if checked is None:
            return True
        age = self.clock() - checked
        heads = self._heads
        return age >= max_age_s or (age >= 1.0 and any(name not in heads for name in wanted))

    def snapshot(self, wanted: Iterable[str] = ()) -> dict[str, LoadedHead]:
        """Current heads; refreshed when stale, or when a wanted name is missing (at most 1/s). With
        :attr:`background` refreshes, heads no older than :data:`BACKGROUND_STALE_FACTOR` intervals are returned
        at once, even while a refresh runs."""
        wanted = list(wanted)
        if self.background and not self._due(wanted, self.refresh_s * BACKGROUND_STALE_FACTOR):
            return dict(self._heads)
        with self._lock:
            return self._snapshot(wanted)

    def _snapshot(self, wanted: Iterable[str]) -> dict[str, LoadedHead]:
        if self._due(wanted, self.refresh_s):
            try:
                self.refresh()
            except DBAPIError as exc:
                # Postgres unreachable: serve the heads we have (the batch's INSERT waits for
                # the database anyway) rather than hand every batch back to the queue at once
                if not self._heads or not is_connection_error(exc):
                    raise
                log.warning("cannot refresh the active heads (database unavailable); serving the cached ones")
                self._checked_at = self.clock()
        return dict(self._heads)


def warn_mismatched_heads(heads: Iterable[LoadedHead], embedder_id: str, spec: str) -> list[str]:
    """Log (at start) each active head this worker cannot serve: trained on another embedder. Returns the lines.

    Their tasks get error rows; the line tells the operator both ways out (after a change of the default
    embedder, heads trained on the old one are the usual case).
    """
    lines = [f"head {h.name} v{h.version} was trained on embedder {h.embedder_id!r} but this worker runs "
             f"{embedder_id!r} (EMBEDCLF_EMBEDDER={spec}): its tasks get error rows until you "
             f"{mismatch_advice(h.embedder_id, embedder_id)}" for h in heads if h.embedder_id != embedder_id]
    for line in lines:
        log.warning("%s", line)
    return lines


class WorkerResources:
    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.hostname = f"{socket.gethostname()}:{os.getpid()}"
        self._engine: Engine | None = None
        self._embedder = embedder
        self._heads: HeadCache | None = None
        self._metrics: WorkerMetrics | None = None
        self._redis: object | None = None

    @property
    def redis(self):  # noqa: ANN201 - a redis-py client
        """This process's Redis client (a thread-safe connection pool) for the broker URL."""
        if self._redis is None:
            from embedclf.redis_conn import redis_client

            self._redis = redis_client(self.settings.broker_url, sentinel_master=self.settings.broker_sentinel_master)
        return self._redis

    @property
    def metrics(self) -> WorkerMetrics:
        if self._metrics is None:
            queue = self.settings.queue
            self._metrics = WorkerMetrics(queue_depth=lambda: self.redis.llen(queue))
        return self._metrics

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            # no pre-ping: a stale connection fails its statement, which the write path retries
            self._engine = make_engine(self.settings.database_url, pool_pre_ping=False)
        return self._engine

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            t0 = time.perf_counter()
            self._embedder = load_embedder(self.settings.embedder, model_dir=self.settings.model_dir, server=True)
            log.info("embedder %s loaded in %.1fs", self._embedder.model_id, time.perf_counter() - t0)
        return self._embedder

    @property
    def heads(self) -> HeadCache:
        if self._heads is None:
            self._heads = HeadCache(self.engine, self.settings.head_refresh_s,
                                    on_broken=lambda *_: self.metrics.head_load_failures.inc())
        return self._heads

    def write_results(self, rows: Sequence[dict], sizes: Sequence[int] | None = None,
                      completed_at: dt.datetime | None = None) -> WriteResult:
        """Write a batch's rows (or several batches' rows, ``sizes`` each) in one statement (raises on
        failure: the caller retries); ``completed_at``: the first batch's stamp (None: the database's now())."""
        return write_results(self.engine, rows, sizes, completed_at)

    def record(self, jobs: Sequence[Any], result: WriteResult) -> None:
        """Metrics and log lines of batches committed together: rows inserted (not attempted, each key
        once), latency, batch sizes, tasks given up, task-id conflicts."""
        m = self.metrics
        now = dt.datetime.now(dt.timezone.utc)
        statuses: dict[str, int] = {}
        latencies: dict[dt.datetime, int] = {}  # rows per enqueued_at: a multi-text task's rows share one
        keys = set(result.inserted_keys)
        for job in jobs:
            for row in job.rows:
                key = (row["task_id"], row.get("item"), row.get("head_name"))
                if key not in keys:
                    continue
                keys.discard(key)  # a row of another task under the same key (a reused id) is not counted
                statuses[row["status"]] = statuses.get(row["status"], 0) + 1
                enqueued = row.get("enqueued_at")
                if enqueued is not None:
                    latencies[enqueued] = latencies.get(enqueued, 0) + 1
            m.batch_size.observe(sum(p.n_texts for p in job.items))
            m.given_up.inc(sum(1 for p in job.items if p.entry.deaths >= self.settings.max_attempts))
        for status, n in statuses.items():
            m.tasks.labels(status).inc(n)
        for enqueued, n in latencies.items():
            m.latency.observe(max(0.0, (now - enqueued).total_seconds()), n)
        for c in result.conflicts:
            m.task_id_conflicts.inc()
            log.error("task id %r was reused by a different task (heads %s, %d texts): its rows were not written; "
                      "recorded in table task_conflicts", c.task_id, c.heads, c.n_texts)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        if self._redis is not None:
            self._redis.close()  # type: ignore[attr-defined]
            self._redis = None


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the database could not be reached (not a bad statement)."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError))


_resources: tuple[int, WorkerResources] | None = None


def get_resources(settings: Settings) -> WorkerResources:
    """The process's resources, built on first call (and again in a forked child)."""
    global _resources
    pid = os.getpid()
    if _resources is None or _resources[0] != pid:
        _resources = (pid, WorkerResources(settings))
    return _resources[1]


def reset_resources() -> None:
    global _resources
    if _resources is not None and _resources[0] == os.getpid():
        _resources[1].close()
    _resources = None
