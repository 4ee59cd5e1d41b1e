"""The Celery app: ``celery -A worker.app worker``.

Creating the app reads settings from the environment and connects to nothing;
the worker builds its engine and loads its embedder on consumer start.
"""

from __future__ import annotations

import logging

from celery import Celery

from embedclf.config import Settings
from worker.runner import FinishBatches
from worker.tasks import register
from worker.transport import TRANSPORT_OPTIONS


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.from_env()
    app = Celery("embedclf", broker=settings.broker_url, set_as_current=False)
    # Prefetch must exceed one batch so the next batch can form while one is processed;
    # with the solo pool prefetch = multiplier x 1.
    prefetch = max(4, 2 * settings.batch.max_size)
    # worker.transport: kombu's Redis transport minus its kill -9 loss window (one priority step)
    transport = {"visibility_timeout": settings.visibility_timeout_s, **TRANSPORT_OPTIONS}
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # what the worker accepts: never pickle
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=settings.queue,
        worker_pool="solo",  # the embedder lives in the consuming process (CUDA-safe)
        worker_concurrency=1,
        worker_prefetch_multiplier=prefetch,
        broker_transport="worker.transport:Transport",
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    app.conf.embedclf_settings = settings
    app.steps["consumer"].add(FinishBatches)
    register(app, settings)
    logging.getLogger("embedclf").setLevel(settings.log_level)
    logging.getLogger("worker").setLevel(settings.log_level)
    return app


app = create_app()
