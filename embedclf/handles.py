"""Handles on enqueued tasks: wait for their results through the Celery result backend or Postgres.

:class:`TaskHandle` is one task (``Client.classify``); :class:`TextHandle` one text of a task
(``Client.classify_many``). ``.get(timeout)`` returns the result (see :mod:`embedclf.results`) or
raises :class:`~embedclf.errors.ClassificationError` when the task failed as a whole, or
:class:`TimeoutError`. :func:`wait_all` waits for many handles together.

Where results come from (a :class:`ResultSource`):

- :class:`BackendSource`: the Celery result backend the workers store results in
  (``EMBEDCLF_RESULT_BACKEND``): ``AsyncResult(task_id).get()``;
- :class:`PostgresSource`: the rows themselves, waited for with ``LISTEN`` (:mod:`embedclf.waiter`),
  when there is no result backend.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from embedclf.errors import ClassificationError
from embedclf.results import entries, failure, for_item, task_value


class ResultSource(Protocol):
    def results(self, tasks: Sequence[tuple[str, bool]], timeout: float | None) -> dict[str, Any]:
        """``{task_id: result or ClassificationError}`` for the tasks ``(task_id, single)`` done in time."""
        ...

    def close(self) -> None: ...


class NoSource:
    def results(self, tasks: Sequence[tuple[str, bool]], timeout: float | None) -> dict[str, Any]:
        raise RuntimeError("this client cannot wait for results: give it result_backend= (the workers' "
                           "EMBEDCLF_RESULT_BACKEND) or database_url= (Postgres, with psycopg2 installed)")

    def close(self) -> None:
        pass


class BackendSource:
    """Results from the Celery result backend (a Celery app configured with it, made on first use)."""

    def __init__(self, broker_url: str, backend_url: str) -> None:
        self.broker_url, self.backend_url = broker_url, backend_url
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            from celery import Celery

            self._app = Celery("embedclf-client", broker=self.broker_url, backend=self.backend_url,
                               set_as_current=False)
            self._app.conf.update(result_serializer="json", result_accept_content=["json"], accept_content=["json"])
        return self._app

    def results(self, tasks: Sequence[tuple[str, bool]], timeout: float | None) -> dict[str, Any]:
        from celery.exceptions import TimeoutError as CeleryTimeout
        from celery.result import AsyncResult

        deadline = None if timeout is None else time.monotonic() + timeout
        out: dict[str, Any] = {}
        for tid, _single in tasks:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                out[tid] = AsyncResult(tid, app=self.app).get(timeout=left, propagate=False, interval=0.05)
            except CeleryTimeout:
                break
        return out

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


class PostgresSource:
    """Results from the rows in Postgres, waited for with LISTEN/NOTIFY."""

    def __init__(self, database_url: str) -> None:
        from embedclf.waiter import ResultHub

        self.hub = ResultHub(database_url)

    def results(self, tasks: Sequence[tuple[str, bool]], timeout: float | None) -> dict[str, Any]:
        rows = self.hub.wait([t for t, _ in tasks], timeout)
        single = dict(tasks)
        out: dict[str, Any] = {}
        for tid, task_rows in rows.items():
            values = entries(task_rows)
            error = failure(values)
            out[tid] = error if error is not None else task_value(values, single[tid])
        return out

    def close(self) -> None:
        self.hub.close()


@dataclass(frozen=True)
class TaskHandle:
    """One enqueued task."""

    task_id: str
    #: one text and one head: the result is one entry, not a list
    single: bool
    source: ResultSource = field(repr=False, compare=False)

    def get(self, timeout: float | None = None) -> Any:
        """The task's result; raises ClassificationError (the task failed) or TimeoutError."""
        return _raise(self._get(timeout))

    def _get(self, timeout: float | None) -> Any:
        found = self.source.results([(self.task_id, self.single)], timeout)
        if self.task_id not in found:
            raise TimeoutError(f"task {self.task_id} has no result after {timeout}s")
        return found[self.task_id]


@dataclass(frozen=True)
class TextHandle:
    """One text of an enqueued task: its rows are ``(task_id, item, head)``."""

    task_id: str
    item: int
    single: bool
    source: ResultSource = field(repr=False, compare=False)

    def get(self, timeout: float | None = None) -> Any:
        """This text's result entry (one head) or entries (several); raises like TaskHandle.get."""
        value = _raise(TaskHandle(self.task_id, self.single, self.source)._get(timeout))
        return value if self.single else for_item(value, self.item)


def wait_all(handles: Sequence[TaskHandle | TextHandle], timeout: float | None = None) -> list[Any]:
    """Results of many handles, waited for together. A failed task's entry is its ClassificationError
    (not raised); raises TimeoutError if some are not done in time."""
    if not handles:
        return []
    source = handles[0].source
    tasks = list(dict.fromkeys((h.task_id, h.single) for h in handles))
    found = source.results(tasks, timeout)
    missing = [t for t, _ in tasks if t not in found]
    if missing:
        raise TimeoutError(f"{len(missing)} of {len(tasks)} tasks have no result after {timeout}s")
    out = []
    for h in handles:
        value = found[h.task_id]
        if isinstance(value, BaseException) or isinstance(h, TaskHandle) or h.single:
            out.append(value)
        else:
            out.append(for_item(value, h.item))
    return out


def _raise(value: Any) -> Any:
    if isinstance(value, ClassificationError):
        raise value
    if isinstance(value, BaseException):  # what Celery rebuilt of another exception type
        raise ClassificationError(str(value)) from value
    return value
