"""A real worker's Prometheus endpoint, scraped after it served good and bad tasks."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from embedclf.client import Client
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.store import repository as repo
from tests.conftest import settings_env
from tests.helpers import free_port, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" in s.labels:
                continue
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


def test_worker_metrics_are_scraped(settings, clean_db, start_worker):
    head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
    repo.add_head_version(clean_db, "m", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
    port = free_port()
    worker = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32", EMBEDCLF_METRICS_PORT=str(port)),
                          name="w-metrics")
    worker.wait_ready()
    before = scrape(port)
    assert before["embedclf_tasks_total{status=ok}"] == 0 and before["embedclf_queue_depth"] >= 0
    client = Client(settings.broker_url, settings.queue)
    refs = client.classify_many("m", [f"text {i}" for i in range(20)] + ["", "bad\x00"])  # one texts= task
    client.close()
    wait_rows(clean_db, [r.task_id for r in refs], worker, timeout=60, n=22)
    m = scrape(port)
    assert m["embedclf_tasks_total{status=ok}"] == 20
    assert m["embedclf_tasks_total{status=error}"] == 2
    assert m["embedclf_latency_seconds_count"] == 22 and m["embedclf_latency_seconds_sum"] > 0
    assert m["embedclf_batch_size_sum"] == 22 and 1 <= m["embedclf_batch_size_count"] <= 22
    assert m["embedclf_inference_seconds_count"] == m["embedclf_write_seconds_count"] >= 1
    # the heads ran once per embedded batch (on the text thread: EMBEDCLF_HEAD_OVERLAP), timed on their own
    assert m["embedclf_head_seconds_count"] == m["embedclf_inference_seconds_count"]
    assert m["embedclf_head_seconds_sum"] > 0
    assert m["embedclf_tasks_requeued_total"] == 0 and m["embedclf_tasks_given_up_total"] == 0
    assert m["embedclf_queue_depth"] == 0


def probe(port: int, path: str) -> tuple[int, dict]:
    import json
    import urllib.error

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_worker_started_while_postgres_is_down_is_live_not_ready_then_ready(settings, clean_db, pg_url,
                                                                              start_worker):
    """An orchestrator keeps a worker that waits out a database outage (live) but sends it no traffic (not ready)."""
    import time
    from urllib.parse import urlsplit

    from sqlalchemy.engine import make_url

    from embedclf.config import Settings
    from tests.faultkit import TcpProxy

    head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
    repo.add_head_version(clean_db, "m", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
    pg = urlsplit(pg_url.replace("postgresql+psycopg2", "postgresql"))
    proxy = TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432)  # not listening yet: Postgres is "down"
    proxied = make_url(pg_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    port = free_port()
    wsettings = Settings(database_url=proxied, broker_url=settings.broker_url, queue=settings.queue)
    worker = start_worker(settings_env(wsettings, EMBEDCLF_EMBEDDER="fake:32", EMBEDCLF_METRICS_PORT=str(port),
                                       EMBEDCLF_HEARTBEAT_TTL_S="4"), name="w-probes")
    try:
        worker.wait_ready()
        time.sleep(2)
        live, ready = probe(port, "/livez"), probe(port, "/readyz")
        assert live[0] == 200 and live[1]["ok"] is True, live
        assert ready[0] == 503 and ready[1]["database_ok"] is False and ready[1]["heads"] == [], ready
        assert ready[1]["heads_age_s"] is None, ready  # never read from Postgres
        assert probe(port, "/health")[0] == 404
        log = worker.log()
        assert log.count("unavailable") <= 2 and "Traceback" not in log  # no spinning, no traceback storm
        proxy.start()  # the database comes back
        deadline = time.monotonic() + 20
        while probe(port, "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        ready = probe(port, "/readyz")
        assert ready[0] == 200 and ready[1]["heads"] == ["m"], ready
        assert 0 <= ready[1]["heads_age_s"] < 10, ready  # the refresher reads them every 2 s
    finally:
        proxy.stop()
