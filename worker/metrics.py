"""Prometheus metrics of a worker process, served on ``EMBEDCLF_METRICS_PORT`` (0 = off).

Each worker process has its own registry and port; scrape every worker. Names:

- ``embedclf_tasks_total{status}``: rows written, ``ok`` or ``error``
- ``embedclf_tasks_requeued_total``: tasks returned to the queue after a failed batch
- ``embedclf_tasks_given_up_total``: tasks turned into error rows after EMBEDCLF_MAX_ATTEMPTS
- ``embedclf_batch_size``: tasks per processed batch (histogram)
- ``embedclf_inference_seconds``: embed + heads time per batch (histogram)
- ``embedclf_write_seconds``: Postgres write time per batch (histogram)
- ``embedclf_latency_seconds``: producer ``enqueued_at`` -> row committed, per task (histogram)
- ``embedclf_queue_depth``: messages waiting in the queue, read at scrape time
- ``embedclf_head_load_failures_total``: head versions that could not be loaded (isolated)
- ``embedclf_task_id_conflicts_total``: tasks that reused the id of a different task (not written)
"""

from __future__ import annotations

import logging
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class QueueDepth:
    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read

    def collect(self):
        g = GaugeMetricFamily("embedclf_queue_depth", "Messages waiting in the queue")
        try:
            g.add_metric([], float(self.read()))
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Redis is down
            log.warning("queue depth unavailable: %s", exc)
            g.add_metric([], float("nan"))
        yield g


class WorkerMetrics:
    def __init__(self, queue_depth: Callable[[], int] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks = Counter("embedclf_tasks", "Result rows written", ["status"], registry=r)
        self.requeued = Counter("embedclf_tasks_requeued", "Tasks returned to the queue", registry=r)
        self.given_up = Counter("embedclf_tasks_given_up", "Tasks given up after max attempts", registry=r)
        self.batch_size = Histogram("embedclf_batch_size", "Tasks per batch", buckets=SIZE_BUCKETS, registry=r)
        self.inference = Histogram("embedclf_inference_seconds", "Embed + heads time per batch",
                                   buckets=TIME_BUCKETS, registry=r)
        self.write = Histogram("embedclf_write_seconds", "Postgres write time per batch", buckets=TIME_BUCKETS,
                               registry=r)
        self.latency = Histogram("embedclf_latency_seconds", "enqueued_at -> row committed",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.head_load_failures = Counter("embedclf_head_load_failures", "Head versions that could not be loaded",
                                          registry=r)
        self.task_id_conflicts = Counter("embedclf_task_id_conflicts", "Tasks that reused another task's id",
                                         registry=r)
        for status in ("ok", "error"):
            self.tasks.labels(status)  # export zeros from the start
        if queue_depth is not None:
            r.register(QueueDepth(queue_depth))

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", addr, port)
