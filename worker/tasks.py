"""Task registration: ``embedclf.classify`` is known to the app (``celery inspect registered`` lists it).

Workers receive its messages through their own bulk pipeline (:mod:`worker.service`), not
through this task object; ``task.apply(kwargs=...)`` runs one payload synchronously in the
calling process (eager mode, for scripts and tests).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from celery import Celery, Task

from embedclf.classify import classify_requests, error_row
from embedclf.config import Settings
from embedclf.payload import TASK_NAME, PayloadError, parse_request, salvage


class ClassifyTask(Task):
    name = TASK_NAME
    ignore_result = True
    typing = False  # payload problems become error rows, not worker errors
    settings: Any = None

    def run(self, **kwargs: Any) -> dict:
        """Classify one payload synchronously and store its rows; returns the task id and rows inserted."""
        from worker.intake import fingerprint
        from worker.resources import get_resources

        task_id = self.request.id or str(uuid.uuid4())
        res = get_resources(self.settings)
        s = self.settings
        try:
            request = parse_request(task_id, (), kwargs, s.max_text_chars, s.max_texts_per_task)
            heads = res.heads.snapshot(wanted=set(request.heads))
            rows = classify_requests([request], res.embedder, heads, chunk_size=s.batch.max_size,
                                     broken=res.heads.broken)
        except PayloadError as exc:
            rows = [error_row(task_id, str(exc), **salvage(kwargs))]
        now = dt.datetime.now(dt.timezone.utc)
        fp = fingerprint(kwargs)
        for row in rows:
            row.update(received_at=now, worker=res.hostname, fingerprint=fp)
        return {"task_id": task_id, "inserted": res.write_results(rows).inserted}


def register(app: Celery, settings: Settings) -> Task:
    """Register ``embedclf.classify`` on ``app``; returns the task."""
    task = type("ClassifyTask", (ClassifyTask,), {"settings": settings})
    return app.register_task(task())
