"""Waiting for tasks' rows in Postgres without polling: LISTEN to the workers' commit notifications.

Workers ``NOTIFY embedclf_results`` with the task ids of every batch they commit (in the same
transaction: the notification arrives only once the rows are visible). A :class:`ResultHub` holds
one ``LISTEN`` connection and a background thread; any number of threads wait on it for any task
ids (the HTTP API's requests, a ``Client``'s handles). When a notification names a task someone
waits for, the hub reads that task's rows and wakes its waiters. A task's rows are committed
together, so one row means all of them. In case a notification is missed (a reconnect), the hub
also re-reads the tasks still awaited every ``recheck_s`` seconds: a slow path, never the hot one.

Needs psycopg2 and a role that may read ``predictions`` (the admin role, not the worker role).
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = "embedclf_results"
_ROWS = """
SELECT task_id, item, head_name, head_version, label, score, top3, labels, abstained, status, error, request_id
FROM predictions WHERE task_id = ANY(%s)
"""


def libpq_dsn(database_url: str) -> str:
    """A libpq connection string from an SQLAlchemy-style URL (``postgresql+psycopg2://…``)."""
    return database_url.replace("postgresql+psycopg2://", "postgresql://", 1).replace("postgres+psycopg2://",
                                                                                      "postgresql://", 1)


class ResultHub:
    def __init__(self, database_url: str, recheck_s: float = 5.0,
                 connect: Callable[[str], Any] | None = None) -> None:
        self.dsn = libpq_dsn(database_url)
        self.recheck_s = recheck_s
        self._connect = connect
        self._lock = threading.Lock()
        self._waiting: dict[str, list[threading.Event]] = {}
        self._rows: dict[str, list[dict]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._query_lock = threading.Lock()
        self._reader: Any = None
        self.notifications = 0

    # -- waiting ---------------------------------------------------------------------------------
    def wait(self, task_ids: Iterable[str], timeout: float | None) -> dict[str, list[dict]]:
        """Rows of each task once it has some (tasks still without rows at ``timeout`` are left out)."""
        ids = list(dict.fromkeys(task_ids))
        self._ensure_started()
        event = threading.Event()
        with self._lock:
            for tid in ids:
                if tid not in self._rows:
                    self._waiting.setdefault(tid, []).append(event)
        self._fetch(ids)  # what is there already (the notification may have come before we listened)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                with self._lock:
                    missing = [t for t in ids if t not in self._rows]
                    if not missing:
                        break
                    event.clear()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                event.wait(left if left is not None else self.recheck_s)
        finally:
            with self._lock:
                for tid in ids:
                    waiters = self._waiting.get(tid)
                    if waiters is not None:
                        waiters[:] = [e for e in waiters if e is not event]
                        if not waiters:
                            del self._waiting[tid]
        with self._lock:
            found = {t: self._rows[t] for t in ids if t in self._rows}
            for t in ids:  # keep memory bounded: rows are handed out once per waiter set
                if t not in self._waiting:
                    self._rows.pop(t, None)
            return found

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._query_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # -- the listening thread ----------------------------------------------------------------------
    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="embedclf-results", daemon=True)
                self._thread.start()
        self._listening.wait(10)

    def _conn(self) -> Any:
        if self._connect is not None:
            return self._connect(self.dsn)
        import psycopg2

        conn = psycopg2.connect(self.dsn, connect_timeout=5)
        conn.autocommit = True
        return conn

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self._conn()
                    with conn.cursor() as cur:
                        cur.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    self._fetch(self._awaited())  # anything committed while we were not listening
                ready, _, _ = select.select([conn], [], [], self.recheck_s)
                if not ready:
                    self._fetch(self._awaited())
                    continue
                conn.poll()
                ids: set[str] = set()
                while conn.notifies:
                    note = conn.notifies.pop(0)
                    self.notifications += 1
                    ids.update(note.payload.split("\n"))
                wanted = ids & set(self._awaited())
                if wanted:
                    self._fetch(wanted)
            except Exception as exc:  # noqa: BLE001 - database gone: reconnect after a pause
                log.warning("result notifications interrupted (%s); reconnecting", " ".join(str(exc).split())[:200])
                self._listening.set()  # waiters fall back to the timeout
                try:
                    if conn is not None:
                        conn.close()
                except Exception:  # noqa: BLE001
                    pass
                conn = None
                self._stop.wait(1.0)
        if conn is not None:
            conn.close()

    def _awaited(self) -> list[str]:
        with self._lock:
            return list(self._waiting)

    def _fetch(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if not ids:
            return
        try:
            rows = self._query(ids)
        except Exception as exc:  # noqa: BLE001 - the next notification or recheck tries again
            log.warning("could not read results (%s)", " ".join(str(exc).split())[:200])
            return
        by_task: dict[str, list[dict]] = {}
        for row in rows:
            by_task.setdefault(row["task_id"], []).append(row)
        with self._lock:
            for tid, task_rows in by_task.items():
                self._rows[tid] = task_rows
                for event in self._waiting.get(tid, []):
                    event.set()

    def _query(self, ids: list[str]) -> list[dict]:
        with self._query_lock:  # one reading connection, kept open, shared by the waiters
            try:
                if self._reader is None:
                    self._reader = self._conn()
                with self._reader.cursor() as cur:
                    cur.execute(_ROWS, (ids,))
                    names = [d[0] for d in cur.description]
                    return [dict(zip(names, r)) for r in cur.fetchall()]
            except Exception:
                if self._reader is not None:
                    try:
                        self._reader.close()
                    except Exception:  # noqa: BLE001
                        pass
                self._reader = None
                raise
