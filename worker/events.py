"""Celery task events for the messages the bulk receive path handles, so ``celery events`` and Flower see them.

Stock Celery sends ``task-received``, ``task-started`` and ``task-succeeded``/``task-failed`` per
task when task events are on (``celery worker -E``, ``worker_send_task_events``, or
``celery control enable_events``). This follows the worker's own event dispatcher's setting at
every batch, so those switches work as usual. Events of a batch are buffered and published
together as one ``task.multi`` message (a list, which Celery's event receiver and Flower read),
after the batch's rows are committed. Events carry a summary of the kwargs (heads, sizes), never
the texts. Events are monitoring: if the broker refuses them they are dropped with a warning.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)


class TaskEvents:
    def __init__(self, app: Any, hostname: str, consumer: Any = None) -> None:
        self.app, self.hostname, self.consumer = app, hostname, consumer
        self._dispatcher: Any = None
        self._connection: Any = None
        self.sent = 0

    def enabled(self) -> bool:
        d = getattr(self.consumer, "event_dispatcher", None)
        if d is None or not d.enabled:
            return False
        return not d.groups or "task" in d.groups

    def _get(self) -> Any:
        if self._dispatcher is None:
            self._connection = self.app.connection_for_write()
            self._dispatcher = self.app.events.Dispatcher(self._connection, hostname=self.hostname, enabled=True,
                                                          buffer_group=["task"], buffer_limit=1_000_000)
        return self._dispatcher

    def batch(self, items: list[Any], rows: list[dict], runtime_s: float) -> None:
        """Events of one committed batch (call from one thread only)."""
        if not items or not self.enabled():
            return
        status: dict[str, list[dict]] = {}
        for row in rows:
            status.setdefault(row["task_id"], []).append(row)
        try:
            d = self._get()
            now = time.time()
            for p in items:
                h = p.headers
                d.send("task-received", uuid=p.task_id, name=p.task_name or "?", args="()", kwargs=p.summary,
                       root_id=h.get("root_id"), parent_id=h.get("parent_id"), retries=h.get("retries") or 0,
                       eta=h.get("eta"), expires=h.get("expires"), timestamp=p.received_at.timestamp())
                d.send("task-started", uuid=p.task_id, timestamp=now)
                task_rows = status.get(p.task_id, [])
                ok = sum(r["status"] == "ok" for r in task_rows)
                if ok:
                    d.send("task-succeeded", uuid=p.task_id, timestamp=now, runtime=runtime_s,
                           result=f"{ok} ok, {len(task_rows) - ok} error rows")
                else:
                    error = next((r.get("error") for r in task_rows if r.get("error")), "no row")
                    d.send("task-failed", uuid=p.task_id, timestamp=now, exception=str(error)[:500], traceback="")
            d.flush()
            self.sent += 3 * len(items)
            log.debug("sent task events of %d tasks", len(items))
        except Exception as exc:  # noqa: BLE001 - monitoring only
            log.warning("task events not sent (%s)", exc)
            self.close()

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:  # noqa: BLE001
                pass
        self._dispatcher = self._connection = None
