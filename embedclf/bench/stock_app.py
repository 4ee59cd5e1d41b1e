"""A stock Celery app for ``bench queue``'s baseline: a no-op task on a solo worker.

The broker and the counter key come from the environment (``EMBEDCLF_BENCH_BROKER``,
``EMBEDCLF_BENCH_COUNTER``); the settings are what an embedclf worker used to run with: JSON
only, acks late, prefetch 64, solo pool, no result backend. The task INCRs a Redis key, so the
benchmark can watch the count.
"""

from __future__ import annotations

import os

from celery import Celery

QUEUE = "bench-stock"
TASK = "bench.noop"

app = Celery("bench-stock", broker=os.environ.get("EMBEDCLF_BENCH_BROKER", "redis://127.0.0.1:6379/0"),
             set_as_current=False)
app.conf.update(task_serializer="json", accept_content=["json"], task_acks_late=True, task_ignore_result=True,
                worker_prefetch_multiplier=64, worker_pool="solo", task_default_queue=QUEUE,
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
_client = None


@app.task(name=TASK)
def noop(i: int = 0) -> None:
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(app.conf.broker_url)
    _client.incr(os.environ.get("EMBEDCLF_BENCH_COUNTER", "bench:count"))
