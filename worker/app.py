"""The Celery app: ``celery -A worker.app worker``.

Creating the app reads settings from the environment and connects to nothing; the worker
loads its embedder and starts its classify pipeline when its consumer starts
(:class:`worker.service.BulkReceive`).

Celery's own consumer does not read the classify queue (``EMBEDCLF_QUEUE``): the pipeline
receives it in bulk. Celery's consumer listens on :data:`CONTROL_QUEUE`, which nothing sends
to, and keeps what it is good at: remote control (``celery inspect ping``, ``revoke``,
``enable_events``), worker events and heartbeats.
"""

from __future__ import annotations

import logging

from celery import Celery
from kombu import Queue

from embedclf.config import Settings
from worker.service import BulkReceive
from worker.tasks import register


def control_queue(settings: Settings) -> str:
    """The queue Celery's consumer listens on: not the classify queue."""
    return f"{settings.queue}.embedclf-control"


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.from_env()
    app = Celery("embedclf", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # what Celery's own consumer accepts: never pickle
        result_serializer="json",
        result_accept_content=["json"],
        # the pipeline stores classify results itself, in bulk (worker/results.py)
        result_backend=settings.result_backend or None,
        result_expires=settings.result_expires_s,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_queues=[Queue(control_queue(settings))],
        task_default_queue=control_queue(settings),
        worker_pool="solo",  # the embedder lives in the consuming process (CUDA-safe)
        worker_concurrency=1,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s,
                                  **settings.broker_transport_options()},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    app.conf.embedclf_settings = settings
    app.steps["consumer"].add(BulkReceive)
    register(app, settings)
    logging.getLogger("embedclf").setLevel(settings.log_level)
    logging.getLogger("worker").setLevel(settings.log_level)
    return app


app = create_app()
