"""Task registration. Tasks are thin: all logic is in embedclf and worker.batching."""

from __future__ import annotations

from celery import Celery

from embedclf.config import Settings
from embedclf.payload import TASK_NAME
from worker.batching import BatchTask


def register(app: Celery, settings: Settings) -> BatchTask:
    """Register ``embedclf.classify`` on ``app``; returns the task."""

    class ClassifyTask(BatchTask):
        name = TASK_NAME
        acks_late = True
        reject_on_worker_lost = True
        ignore_result = True
        typing = False  # payload problems become error rows, not worker errors

    ClassifyTask.settings = settings
    return app.register_task(ClassifyTask())
