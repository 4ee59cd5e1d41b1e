"""What the HTTP endpoints use, built once per app: enqueue, wait, read results and heads, probe.

Blocking calls (Redis, Postgres); the app runs them in worker threads. One :class:`Backend` holds:

- one :class:`~embedclf.client.Client` (its Redis connection pool is shared by all requests);
- one :class:`~embedclf.waiter.ResultHub`: every waiting request waits on its single ``LISTEN``
  connection (plus one connection that reads the rows), however many requests wait;
- a small SQLAlchemy pool for ``GET /v1/results``, ``GET /v1/heads``, the unknown-head check and
  ``/readyz``. The queries use the tables directly (``embedclf.store.repository`` imports torch).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from embedclf.config import Settings, redact
from embedclf.http.validate import ApiError, Submission

log = logging.getLogger(__name__)

#: a request gives up on an unreachable broker after this long (503), however long EMBEDCLF_ENQUEUE_RETRY_S is
ENQUEUE_RETRY_S = 5.0
#: below this many bytes of EMBEDCLF_MAX_PAYLOAD_BYTES a multi-text message counts as too large (the client's
#: own message differs from the one measured here only in its task id's and timestamp's digits)
SIZE_MARGIN = 64
#: probes give up after this long
PROBE_TIMEOUT_S = 2.0
#: a name not among the cached active heads re-reads them at most this often
HEADS_RECHECK_S = 0.5
#: the hub's LISTEN thread wakes this often (re-reads the tasks awaited in case a notification was missed;
#: bounds how long closing it takes)
HUB_RECHECK_S = 1.0


class Backend:
    def __init__(self, settings: Settings) -> None:
        from embedclf.client import Client
        from embedclf.redis_conn import redis_client
        from embedclf.store.db import make_engine
        from embedclf.waiter import ResultHub

        self.settings = settings
        self.client = Client(settings.broker_url, settings.queue,
                             enqueue_retry_s=min(settings.enqueue_retry_s, ENQUEUE_RETRY_S),
                             max_payload_bytes=settings.max_payload_bytes,
                             max_texts_per_task=settings.max_texts_per_task)
        self.hub = ResultHub(settings.database_url, recheck_s=HUB_RECHECK_S)
        self.engine = make_engine(settings.database_url, pool_size=4, max_overflow=4, pool_timeout=PROBE_TIMEOUT_S,
                                  connect_args={"connect_timeout": int(PROBE_TIMEOUT_S)})
        self.probe = redis_client(settings.broker_url, socket_timeout=PROBE_TIMEOUT_S,
                                  socket_connect_timeout=PROBE_TIMEOUT_S, health_check_interval=0)
        self._heads_lock = threading.Lock()
        self._active: dict[str, int] | None = None
        self._active_at = 0.0

    # -- lifetime --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect what can be connected now (a service that is down is retried by later requests)."""
        try:
            _ = self.client.redis  # made here, once: not raced by the first requests' threads
        except Exception as exc:  # noqa: BLE001
            log.warning("broker client: %s", self._clean(exc))
        self.hub.wait([], 0)  # starts the LISTEN thread (returns at once if Postgres is down)

    def close(self) -> None:
        for close in (self.hub.close, self.client.close, self.probe.close, self.engine.dispose):
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - shutting down: report, go on
                log.warning("closing: %s", self._clean(exc))

    def _clean(self, exc: BaseException) -> str:
        text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
        return " ".join(redact(text, self.settings.database_url, self.settings.broker_url).split())[:300]

    # -- classify ------------------------------------------------------------------------------------
    def submit(self, sub: Submission) -> str:
        """Check the heads, enqueue one task; its id. Raises ApiError (422 unknown head, 413, 503)."""
        from embedclf.client import BrokerUnavailable, EnqueueError, PayloadTooLarge

        self.check_heads(sub.heads)
        try:
            if not sub.multi:
                rid = sub.request_ids[0] if sub.request_ids else None
                return self.client.classify(sub.head, sub.texts[0], rid).task_id
            self._check_size(sub)
            handles = self.client.classify_many(sub.head, sub.texts, sub.request_ids, per_task=len(sub.texts))
        except PayloadTooLarge:
            raise self._too_large() from None
        except BrokerUnavailable as exc:
            raise ApiError(503, "broker_unavailable", self._clean(exc), headers={"Retry-After": "5"}) from None
        except EnqueueError as exc:
            raise ApiError(503, "broker_error", self._clean(exc)) from None
        ids = list(dict.fromkeys(h.task_id for h in handles))
        if len(ids) != 1:  # cannot happen after _check_size; never answer with a partial task id
            log.error("request split into %d tasks: %s", len(ids), ids)
            raise ApiError(500, "internal_error", f"the texts went out as {len(ids)} tasks: {', '.join(ids)}")
        return ids[0]

    def _too_large(self) -> ApiError:
        return ApiError(413, "payload_too_large",
                        f"the request does not fit in one task message ({self.settings.max_payload_bytes} bytes, "
                        "EMBEDCLF_MAX_PAYLOAD_BYTES, after JSON escaping and base64); send fewer or shorter texts "
                        "per request")

    def _check_size(self, sub: Submission) -> None:
        """A multi-text request must fit in one message (one request, one task id): measured as the client
        will build it, before anything is sent."""
        from embedclf.client import head_kwargs
        from embedclf.envelope import encode
        from embedclf.payload import TASK_NAME

        kwargs: dict[str, Any] = {**head_kwargs(sub.head), "texts": sub.texts, "enqueued_at": time.time()}
        if sub.request_ids is not None and any(r is not None for r in sub.request_ids):
            kwargs["request_ids"] = sub.request_ids
        raw = encode(TASK_NAME, str(uuid.uuid4()), kwargs, self.settings.queue)
        if len(raw) > self.settings.max_payload_bytes - SIZE_MARGIN:
            raise self._too_large()

    # -- heads -----------------------------------------------------------------------------------------
    def active_versions(self) -> dict[str, int]:
        from sqlalchemy import select

        from embedclf.store.tables import heads

        with self.engine.connect() as conn:
            return {r.name: r.version for r in conn.execute(select(heads.c.name, heads.c.version)
                                                            .where(heads.c.is_active))}

    def check_heads(self, names: tuple[str, ...]) -> None:
        """422 for a head that is not active. Cached for EMBEDCLF_HEAD_REFRESH_S (a name not in the cache
        re-reads the table first); when Postgres does not answer, the check is skipped (the worker then
        writes an error row for an unknown head)."""
        now = time.monotonic()
        with self._heads_lock:
            active, age = self._active, now - self._active_at
            stale = active is None or age > self.settings.head_refresh_s
            if active is None or stale or (any(n not in active for n in names) and age > HEADS_RECHECK_S):
                try:
                    active = self.active_versions()
                except Exception as exc:  # noqa: BLE001
                    log.warning("unknown-head check skipped: cannot read heads (%s)", self._clean(exc))
                    return
                self._active, self._active_at = active, now
        assert active is not None  # read above whenever the cache was empty
        unknown = [n for n in names if n not in active]
        if unknown:
            known = ", ".join(sorted(active)) or "none"
            raise ApiError(422, "unknown_head", f"unknown head {unknown[0]!r} (active heads: {known})",
                           unknown_heads=unknown, active_heads=sorted(active))

    def heads(self) -> list[dict]:
        from sqlalchemy import select

        from embedclf.store.tables import heads as h

        q = select(h.c.name, h.c.version, h.c.labels, h.c.embedder_id, h.c.created_at, h.c.activated_at) \
            .where(h.c.is_active).order_by(h.c.name)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(q).all()
        except Exception as exc:  # noqa: BLE001
            raise self._db_error(exc) from None
        return [{"name": r.name, "version": r.version, "labels": list(r.labels), "embedder": r.embedder_id,
                 "created_at": r.created_at.isoformat() if r.created_at else None,
                 "activated_at": r.activated_at.isoformat() if r.activated_at else None} for r in rows]

    # -- results ---------------------------------------------------------------------------------------
    def rows(self, task_id: str) -> list[dict]:
        """The task's rows now (none yet: empty)."""
        from sqlalchemy import select

        from embedclf.results import RESULT_FIELDS
        from embedclf.store.tables import predictions as p

        q = select(*[p.c[name] for name in RESULT_FIELDS]).where(p.c.task_id == task_id)
        try:
            with self.engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(q)]
        except Exception as exc:  # noqa: BLE001
            raise self._db_error(exc) from None

    def wait(self, task_id: str, timeout: float) -> list[dict] | None:
        """The task's rows once committed (through the shared LISTEN connection); None after ``timeout``."""
        return self.hub.wait([task_id], max(0.0, timeout)).get(task_id)

    def _db_error(self, exc: BaseException) -> ApiError:
        return ApiError(503, "database_unavailable", f"cannot read Postgres: {self._clean(exc)}",
                        headers={"Retry-After": "5"})

    # -- probes ----------------------------------------------------------------------------------------
    def ready(self) -> tuple[bool, dict]:
        """The broker answers a PING and Postgres a ``SELECT 1``, each within PROBE_TIMEOUT_S."""
        from sqlalchemy import text

        out: dict[str, Any] = {}
        try:
            self.probe.ping()
            out["broker"] = {"ok": True}
        except Exception as exc:  # noqa: BLE001
            out["broker"] = {"ok": False, "error": self._clean(exc)}
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            out["database"] = {"ok": True}
        except Exception as exc:  # noqa: BLE001
            out["database"] = {"ok": False, "error": self._clean(exc)}
        return all(v["ok"] for v in out.values()), out
