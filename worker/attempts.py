"""Delivery attempts per task, kept in Redis so they survive a worker crash.

Redis keeps no delivery count for a message: a task that kills its worker
(segfault, OOM, ``kill -9``) would be redelivered forever. The worker counts
an attempt *before* processing a batch, forgets it once the row is committed,
and gives it back when the failure was not the task's fault (the database was
unreachable). A count that survives means the worker died while holding it.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

log = logging.getLogger(__name__)
PREFIX = "embedclf:attempts:"


class AttemptCounter:
    def __init__(self, client, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s

    def peek(self, task_ids: Sequence[str]) -> dict[str, int]:
        """Attempts already made (0 = never tried) without counting a new one."""
        if not task_ids:
            return {}
        try:
            values = self.client.mget([PREFIX + t for t in task_ids])
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot read attempt counts (%s); treating the batch as first tries", exc)
            return {t: 0 for t in task_ids}
        return {t: int(v) if v is not None else 0 for t, v in zip(task_ids, values)}

    def begin(self, task_ids: Sequence[str]) -> dict[str, int]:
        """Count one more attempt for each task; returns the counts (1 = first try)."""
        if not task_ids:
            return {}
        try:
            pipe = self.client.pipeline(transaction=False)
            for tid in task_ids:
                pipe.incr(PREFIX + tid)
                pipe.expire(PREFIX + tid, self.ttl_s)
            counts = pipe.execute()[::2]
        except Exception as exc:  # noqa: BLE001 - counting is best effort; processing goes on
            log.warning("cannot count attempts (%s); treating the batch as first tries", exc)
            return {tid: 1 for tid in task_ids}
        return {tid: int(n) for tid, n in zip(task_ids, counts)}

    def done(self, task_ids: Iterable[str]) -> None:
        """The tasks have their rows: forget their counts."""
        keys = [PREFIX + t for t in task_ids]
        if keys:
            try:
                self.client.delete(*keys)
            except Exception as exc:  # noqa: BLE001 - keys expire anyway
                log.warning("cannot clear attempt counts (%s)", exc)

    def undo(self, task_ids: Iterable[str]) -> None:
        """Give an attempt back: the failure was not the tasks' fault."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for tid in task_ids:
                pipe.decr(PREFIX + tid)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot give back attempt counts (%s)", exc)
