"""Celery results and callbacks for classify tasks, sent after their rows are committed.

With a result backend (``EMBEDCLF_RESULT_BACKEND``), each task's result is stored where a producer's
``AsyncResult(task_id).get()`` finds it: for a task with one text and one head, a dict; for
``heads=[...]`` and/or ``texts=[...]``, a list of dicts in (item, head) order. A task none of whose
rows is ``ok`` ends in Celery's FAILURE state with :class:`ClassificationError` (its message: the
first error), so ``.get()`` raises and ``.get(propagate=False)`` returns the exception. For a Redis
backend, the results of a whole batch go out in one pipeline (``SETEX`` + ``PUBLISH`` per task, as
Celery's own Redis backend does one by one); other backends store them one by one.

``link=`` / ``link_error=`` signatures that came with a task are sent as stock Celery sends them:
callbacks with the result as their argument, errbacks with the task id; a ``chain`` continues with
the result. Nothing is sent for a task whose id was reused by another task (its rows were not written,
and the id's result belongs to the first task). Without a backend and without callbacks nothing is done.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from embedclf.results import entries, failure, task_value

log = logging.getLogger(__name__)


def task_results(items: Iterable[Any], rows: list[dict], skip: set[str]) -> list[tuple[Any, str, Any]]:
    """``(message, state, result)`` per message of a committed batch (``skip``: reused task ids)."""
    by_key: dict[tuple[str, Any], list[dict]] = {}
    for row in rows:
        by_key.setdefault((row["task_id"], row.get("fingerprint")), []).append(row)
    out: list[tuple[Any, str, Any]] = []
    for p in items:
        if p.task_id in skip:
            continue
        values = entries(by_key.get((p.task_id, p.fingerprint), []))
        error = failure(values)
        if error is not None:
            out.append((p, "FAILURE", error))
            continue
        single = p.request is not None and not p.request.multi and len(p.request.heads) == 1
        out.append((p, "SUCCESS", task_value(values, single)))
    return out


class ResultSender:
    """Stores results in the app's backend and sends callbacks (call from one thread)."""

    def __init__(self, app: Any, store: bool) -> None:
        self.app = app
        self.store = store

    def send(self, items: list[Any], rows: list[dict], skip: set[str]) -> None:
        wants = self.store or any(p.embed.get("callbacks") or p.embed.get("errbacks") or p.embed.get("chain")
                                  for p in items)
        if not wants:
            return
        results = task_results(items, rows, skip)
        if self.store:
            try:
                self._store(results)
            except Exception as exc:  # noqa: BLE001 - the rows are the record; results are a convenience
                log.warning("could not store %d task result(s) in the result backend (%s)", len(results), exc)
        for p, state, result in results:
            try:
                self._callbacks(p, state, result)
            except Exception as exc:  # noqa: BLE001
                log.warning("could not send the callbacks of task %s (%s)", p.task_id, exc)

    def _store(self, results: list[tuple[Any, str, Any]]) -> None:
        backend = self.app.backend
        from celery.backends.redis import RedisBackend

        if isinstance(backend, RedisBackend):
            now = dt.datetime.now(dt.timezone.utc).isoformat()
            with backend.client.pipeline() as pipe:
                for p, state, result in results:
                    value = backend.prepare_exception(result) if state == "FAILURE" else result
                    meta = {"status": state, "result": value, "traceback": None, "children": [],
                            "date_done": now, "task_id": p.task_id}
                    key = backend.get_key_for_task(p.task_id)
                    encoded = backend.encode(meta)
                    if backend.expires:
                        pipe.setex(key, int(backend.expires), encoded)
                    else:
                        pipe.set(key, encoded)
                    pipe.publish(key, encoded)
                pipe.execute()
            return
        for p, state, result in results:
            backend.store_result(p.task_id, result, state)

    def _callbacks(self, p: Any, state: str, result: Any) -> None:
        from celery import group

        embed, tid = p.embed, p.task_id
        root = p.headers.get("root_id") or tid
        if state == "SUCCESS":
            for cb in embed.get("callbacks") or ():
                self.app.signature(cb).apply_async((result,), parent_id=tid, root_id=root)
            chain = list(embed.get("chain") or ())
            if chain:
                nxt = self.app.signature(chain.pop())
                nxt.apply_async((result,), chain=chain or None, parent_id=tid, root_id=root)
        elif embed.get("errbacks"):
            group([self.app.signature(e) for e in embed["errbacks"]], app=self.app).apply_async(
                (tid,), parent_id=tid, root_id=root)
