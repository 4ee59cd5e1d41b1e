"""The worker's metrics port, in-process: /metrics, /livez, /readyz, 404 for the rest, loopback by default.

Real HTTP requests to a server started here with fake checks; no worker, broker or database involved
(tests/worker/test_metrics.py scrapes a real worker).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port
from worker.metrics import WorkerMetrics


def get(port: int, path: str, method: str = "GET", host: str = "127.0.0.1") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read()
    finally:
        conn.close()


class Flag:
    """A fake check whose answer the test flips."""

    def __init__(self, ok: bool, **detail) -> None:
        self.ok, self.detail, self.calls = ok, detail, 0

    def __call__(self):
        self.calls += 1
        return self.ok, dict(self.detail)


@pytest.fixture
def served():
    servers = []

    def serve(metrics: WorkerMetrics, *args, **kwargs):
        port = free_port()
        server = metrics.serve(port, *args, **kwargs)
        servers.append(server)
        return port

    yield serve
    for s in servers:
        if s is not None:
            s.close()


def test_other_paths_are_json_404(served):
    """Before: prometheus_client's server answered 200 with the metrics body for /health and any path."""
    port = served(WorkerMetrics(), "127.0.0.1")
    for path in ("/health", "/", "/metricsx", "/livez/extra"):
        status, ctype, body = get(port, path)
        assert status == 404, (path, status, body[:100])
        assert ctype == "application/json"
        assert json.loads(body) == {"ok": False, "error": f"not found: {path}",
                                    "paths": ["/metrics", "/livez", "/readyz"]}


def test_metrics_in_prometheus_text_format(served):
    m = WorkerMetrics(queue_depth=lambda: 7)
    m.tasks.labels("ok").inc(3)
    m.batch_size.observe(5)
    port = served(m, "127.0.0.1")
    for path in ("/metrics", "/metrics?name[]=embedclf_tasks_total"):
        status, ctype, body = get(port, path)
        assert status == 200 and ctype.startswith("text/plain")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}
        assert samples[("embedclf_tasks_total", (("status", "ok"),))] == 3
        assert samples[("embedclf_tasks_total", (("status", "error"),))] == 0
        assert samples[("embedclf_batch_size_count", ())] == 1
        assert samples[("embedclf_queue_depth", ())] == 7


def test_livez_and_readyz_answer_their_checks(served):
    live, ready = Flag(True, broker="redis://h:6379/0"), Flag(False, database="unreachable", heads=0)
    port = served(WorkerMetrics(), "127.0.0.1", live=live, ready=ready)
    status, ctype, body = get(port, "/livez")
    assert (status, ctype, json.loads(body)) == (200, "application/json", {"ok": True, "broker": "redis://h:6379/0"})
    status, _, body = get(port, "/readyz")
    assert (status, json.loads(body)) == (503, {"ok": False, "database": "unreachable", "heads": 0})
    ready.ok, ready.detail = True, {"heads": 2}  # the database came back
    status, _, body = get(port, "/readyz")
    assert (status, json.loads(body)) == (200, {"ok": True, "heads": 2})
    live.ok = False
    assert get(port, "/livez")[0] == 503
    assert (live.calls, ready.calls) == (2, 2)  # each request asks its check afresh
    status, _, body = get(port, "/readyz", method="HEAD")
    assert status == 200 and body == b""


def test_a_check_that_raises_is_a_503_not_a_dead_server(served):
    def broken():
        raise RuntimeError("database driver exploded")

    port = served(WorkerMetrics(), "127.0.0.1", live=Flag(True), ready=broken)
    status, _, body = get(port, "/readyz")
    assert status == 503
    assert json.loads(body) == {"ok": False, "error": "check raised RuntimeError: database driver exploded"}
    assert get(port, "/livez")[0] == 200 and get(port, "/metrics")[0] == 200


def test_without_checks_the_probes_answer_while_the_process_serves(served):
    port = served(WorkerMetrics(), "127.0.0.1")
    for path in ("/livez", "/readyz"):
        status, _, body = get(port, path)
        assert status == 200 and json.loads(body)["ok"] is True


def test_a_slow_check_does_not_block_metrics(served):
    release = threading.Event()

    def slow():
        release.wait(10)
        return True, {}

    port = served(WorkerMetrics(), "127.0.0.1", ready=slow)
    waiting = threading.Thread(target=get, args=(port, "/readyz"), daemon=True)
    waiting.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert get(port, "/metrics")[0] == 200
    assert time.monotonic() - t0 < 5  # not held behind the 10 s readiness check
    release.set()
    waiting.join(5)


def non_loopback_ipv4() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # UDP connect sends nothing: it only picks the outgoing address
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def test_binds_loopback_unless_told(served):
    """Before: the default was 0.0.0.0, reachable from the network."""
    ip = non_loopback_ipv4()
    if ip is None:
        pytest.skip("this host has no non-loopback IPv4 address to probe from")
    port = served(WorkerMetrics())
    assert get(port, "/livez")[0] == 200
    with pytest.raises(OSError):
        get(port, "/livez", host=ip)
    exposed = served(WorkerMetrics(), "0.0.0.0")  # EMBEDCLF_METRICS_ADDR=0.0.0.0 opts in
    assert get(exposed, "/livez", host=ip)[0] == 200


def test_an_ipv6_address_works():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    server = WorkerMetrics().serve(0, "::1")
    try:
        assert get(server.port, "/livez", host="::1")[0] == 200
    finally:
        server.close()
