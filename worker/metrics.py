"""Prometheus metrics of a worker process, served on ``EMBEDCLF_METRICS_PORT`` (0 = off).

Each worker process has its own registry and port; scrape every worker. Names:

- ``embedclf_tasks_total{status}``: rows written, ``ok`` or ``error``
- ``embedclf_tasks_requeued_total``: tasks returned to the queue after a failed batch
- ``embedclf_tasks_given_up_total``: tasks turned into error rows after EMBEDCLF_MAX_ATTEMPTS
- ``embedclf_batch_size``: tasks per processed batch (histogram)
- ``embedclf_inference_seconds``: the batch thread's model time per batch: the embedding, plus the heads
  when they run on that thread (``EMBEDCLF_HEAD_OVERLAP=false``) (histogram)
- ``embedclf_head_seconds``: the heads' time per batch, rows included, on whichever thread runs them (histogram)
- ``embedclf_write_seconds``: Postgres write time per batch (histogram)
- ``embedclf_latency_seconds``: producer ``enqueued_at`` -> row committed, per row written (histogram)
- ``embedclf_queue_depth``: messages waiting in the queue, read at scrape time
- ``embedclf_head_load_failures_total``: head versions that could not be loaded (isolated)
- ``embedclf_task_id_conflicts_total``: tasks that reused the id of a different task (not written)

The port also answers probes (JSON, 200 when ok, else 503): ``/livez`` (the process is alive and its
``live`` check passes: the broker answers) and ``/readyz`` (the ``ready`` check passes: the database
answers and heads are loaded); any other path is a JSON 404. It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import bisect
import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

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


#: a probe: ``(ok, detail)``; the endpoint answers ``{"ok": ok, **detail}`` with 200 or 503
Check = Callable[[], tuple[bool, dict[str, Any]]]


def _no_check() -> tuple[bool, dict[str, Any]]:
    return True, {"checks": "none configured"}


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path in ("/livez", "/readyz"):
            self._probe(self.server.live if path == "/livez" else self.server.ready)
        else:
            self._json(404, {"ok": False, "error": f"not found: {path}", "paths": ["/metrics", "/livez", "/readyz"]})

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _probe(self, check: Check) -> None:
        try:
            ok, detail = check()
            body: dict[str, object] = {"ok": bool(ok)}
            body.update({k: v for k, v in dict(detail or {}).items() if k != "ok"})
        except Exception as exc:  # noqa: BLE001 - a failing check is a failed probe, not a dead server
            log.warning("%s check raised: %s", self.path, exc)
            body = {"ok": False, "error": f"check raised {type(exc).__name__}: {exc}"[:500]}
        self._json(200 if body["ok"] else 503, body)

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body, default=str, sort_keys=True).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - no access log on stderr
        log.debug("metrics %s: " + format, self.client_address[0], *args)


class MetricsServer(ThreadingHTTPServer):
    """``/metrics``, ``/livez``, ``/readyz`` on one port, each request in its own daemon thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: str, port: int, registry: CollectorRegistry, live: Check, ready: Check) -> None:
        self.registry, self.live, self.ready = registry, live, ready
        if ":" in addr:  # an IPv6 address ("::", "::1")
            self.address_family = socket.AF_INET6
        super().__init__((addr, port), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, name="embedclf-metrics", daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def close(self) -> None:
        """Stop serving and release the port."""
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


class CountedHistogram:
    """A histogram that takes a value with a count (the rows of a multi-text task share one latency):
    one call per task instead of one per row. Exported like a prometheus_client Histogram."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc = name, doc
        self.bounds = [*buckets, float("inf")]
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float, count: int = 1) -> None:
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self.counts[i] += count
            self.sum += value * count

    def collect(self) -> list[HistogramMetricFamily]:
        with self._lock:
            cumulative, total = [], 0
            for bound, n in zip(self.bounds, self.counts):
                total += n
                cumulative.append((_bound(bound), total))
            return [HistogramMetricFamily(self.name, self.doc, buckets=cumulative, sum_value=self.sum)]


def _bound(b: float) -> str:
    return "+Inf" if b == float("inf") else repr(float(b))


class WorkerMetrics:
    def __init__(self, queue_depth: Callable[[], int] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks = Counter("embedclf_tasks", "Result rows written", ["status"], registry=r)
        self.requeued = Counter("embedclf_tasks_requeued", "Tasks returned to the queue", registry=r)
        self.given_up = Counter("embedclf_tasks_given_up", "Tasks given up after max attempts", registry=r)
        self.batch_size = Histogram("embedclf_batch_size", "Tasks per batch", buckets=SIZE_BUCKETS, registry=r)
        self.inference = Histogram("embedclf_inference_seconds", "Batch thread's embed (+ heads) time per batch",
                                   buckets=TIME_BUCKETS, registry=r)
        self.heads = Histogram("embedclf_head_seconds", "Heads time per batch (rows included)",
                               buckets=TIME_BUCKETS, registry=r)
        self.write = Histogram("embedclf_write_seconds", "Postgres write time per batch", buckets=TIME_BUCKETS,
                               registry=r)
        self.latency = CountedHistogram("embedclf_latency_seconds", "enqueued_at -> row committed",
                                        LATENCY_BUCKETS)
        r.register(self.latency)
        self.head_load_failures = Counter("embedclf_head_load_failures", "Head versions that could not be loaded",
                                          registry=r)
        self.task_id_conflicts = Counter("embedclf_task_id_conflicts", "Tasks that reused another task's id",
                                         registry=r)
        for status in ("ok", "error"):
            self.tasks.labels(status)  # export zeros from the start
        if queue_depth is not None:
            r.register(QueueDepth(queue_depth))

    def serve(self, port: int, addr: str = "127.0.0.1", live: Check | None = None,
              ready: Check | None = None) -> MetricsServer:
        """Serve ``/metrics``, ``/livez`` (``live``), ``/readyz`` (``ready``) on ``addr:port`` in a daemon thread.

        ``live`` and ``ready`` return ``(ok, detail)``; the answer is JSON ``{"ok": ok, **detail}``, 200 when
        ok, else 503 (also when the check raises). Without a check the endpoint answers 200 while the process
        serves. Checks run in the request's thread: keep them bounded (connect timeouts). Port 0 picks a
        free port (``server.port``).
        """
        server = MetricsServer(addr, port, self.registry, live or _no_check, ready or _no_check)
        server.thread.start()
        log.info("metrics on http://%s:%d/metrics (probes /livez, /readyz)", addr, server.port)
        return server
