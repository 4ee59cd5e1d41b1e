"""Per-process worker resources: engine, embedder, active heads.

Created lazily on first use in the process that serves tasks (the solo pool's
only process), never at import time and never shared across a fork.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Iterable, Sequence

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from embedclf.classify import LoadedHead
from embedclf.config import Settings
from embedclf.embedders.base import Embedder
from embedclf.embedders.spec import load_embedder
from embedclf.store import repository
from embedclf.store.db import make_engine
from worker.attempts import AttemptCounter
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class HeadCache:
    """Snapshot of active heads, refreshed by a cheap poll of ``{name: version}``."""

    def __init__(self, engine: Engine, refresh_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self.clock = clock
        self._heads: dict[str, LoadedHead] = {}
        self._checked_at: float | None = None

    def refresh(self) -> None:
        active = repository.active_versions(self.engine)
        heads: dict[str, LoadedHead] = {}
        for name, version in active.items():
            current = self._heads.get(name)
            if current is not None and current.version == version:
                heads[name] = current
                continue
            meta, artifact = repository.load_head(self.engine, name, version)
            heads[name] = LoadedHead(name, version, artifact.embedder_id, artifact.labels, artifact.build())
            log.info("loaded head %s v%d (%d labels, embedder %s)", name, version, len(artifact.labels), artifact.embedder_id)
        self._heads = heads
        self._checked_at = self.clock()

    def snapshot(self, wanted: Iterable[str] = ()) -> dict[str, LoadedHead]:
        """Current heads; refreshed when stale, or when a wanted name is missing (at most 1/s)."""
        now = self.clock()
        age = None if self._checked_at is None else now - self._checked_at
        missing = any(name not in self._heads for name in wanted)
        if age is None or age >= self.refresh_s or (missing and age >= 1.0):
            try:
                self.refresh()
            except DBAPIError as exc:
                # Postgres unreachable: serve the heads we have (the batch's INSERT waits for
                # the database anyway) rather than hand every batch back to the queue at once
                if not self._heads or not is_connection_error(exc):
                    raise
                log.warning("cannot refresh the active heads (database unavailable); serving the cached ones")
                self._checked_at = now
        return dict(self._heads)


class WorkerResources:
    def __init__(self, settings: Settings, embedder: Embedder | None = None, db_retry_s: float = 60.0) -> None:
        self.settings = settings
        self.db_retry_s = db_retry_s
        self.hostname = f"{socket.gethostname()}:{os.getpid()}"
        self._engine: Engine | None = None
        self._embedder = embedder
        self._heads: HeadCache | None = None
        self._attempts: AttemptCounter | None = None
        self._metrics: WorkerMetrics | None = None

    @property
    def metrics(self) -> WorkerMetrics:
        if self._metrics is None:
            queue = self.settings.queue
            self._metrics = WorkerMetrics(queue_depth=lambda: self.attempts.client.llen(queue))
        return self._metrics

    @property
    def attempts(self) -> AttemptCounter:
        if self._attempts is None:
            import redis

            client = redis.Redis.from_url(self.settings.broker_url, socket_timeout=5, socket_connect_timeout=5)
            self._attempts = AttemptCounter(client, ttl_s=2 * self.settings.visibility_timeout_s)
        return self._attempts

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url)
        return self._engine

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            t0 = time.perf_counter()
            self._embedder = load_embedder(self.settings.embedder, model_dir=self.settings.model_dir)
            log.info("embedder %s loaded in %.1fs", self._embedder.model_id, time.perf_counter() - t0)
        return self._embedder

    @property
    def heads(self) -> HeadCache:
        if self._heads is None:
            self._heads = HeadCache(self.engine, self.settings.head_refresh_s)
        return self._heads

    def write_rows(self, rows: Sequence[dict]) -> int:
        """Write a batch's rows in one statement, retrying while Postgres is unreachable."""
        deadline = time.monotonic() + self.db_retry_s
        delay = 0.2
        while True:
            try:
                return repository.write_predictions(self.engine, rows)
            except DBAPIError as exc:
                if not is_connection_error(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
                log.warning("database unavailable (%s); retrying in %.1fs", str(exc.orig).strip()[:200], delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        if self._attempts is not None:
            self._attempts.client.close()
            self._attempts = None


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
