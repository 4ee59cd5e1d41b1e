"""``embedclf bench http``: smoke test with the fake embedder (figures exist and are sane; not a timed test)."""

from __future__ import annotations

import json
import os

import pytest
import redis
from click.testing import CliRunner

from embedclf.cli import cli
from tests.bench.benchdb import bench_databases
from tests.conftest import PG_SERVER, REDIS_SERVER

ENV = {
    "EMBEDCLF_DATABASE_URL": f"{PG_SERVER}/postgres",
    "EMBEDCLF_BROKER_URL": f"{REDIS_SERVER}/0",
    "EMBEDCLF_EMBEDDER": "fake:64",
}




@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(180)
def test_http_smoke():
    result = CliRunner().invoke(cli, ["bench", "http", "-n", "30", "--rate", "30", "--warmup", "2",
                                      "--max-wait-ms", "10", "--json"], env=ENV, catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    r = json.loads(result.stdout)
    assert r["mode"] == "http" and r["embedder"] == "fake:64" and r["n"] == 30 and r["warmup"] == 2
    assert (r["requests"], r["ok"], r["statuses"], r["first_error"]) == (30, 30, {"200": 30}, None), r
    assert r["rows"] == 30, r  # only the measured requests' rows
    assert 0 < r["throughput_per_s"] and r["seconds"] > 0, r
    assert 0 < r["queue_p50_ms"] and 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["latency_max_ms"], r
    assert 0 <= r["server_parse_p50_ms"] and 0 < r["server_enqueue_p50_ms"] and 0 < r["server_wait_p50_ms"], r
    assert r["server_rss_mb"] > 0 and r["worker_rss_mb"] > 0, r
    assert r["batch_sizes"]["batches"] >= 1 and r["machine"]["embedder"] == "fake:64"
    # the temporary database is gone and the Redis DB is flushed (other sessions may run benches on the same
    # servers meanwhile, so only this run's database is checked)
    assert r["database"].startswith(f"embedclf_bench_{os.getpid()}_") and r["database"] not in bench_databases()
    assert redis.Redis.from_url(f"{REDIS_SERVER}/{r['redis_db']}").dbsize() == 0
