"""``embedclf bench queue``: every figure present and consistent, bad options refused, nothing left behind.

The rates themselves are not judged here (a benchmark command prints them; see docs/benchmarks.md).
"""

from __future__ import annotations

import json

import pytest

from tests.bench.benchdb import bench_databases, check_machine, positive, run
from tests.conftest import one_line_error


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(300)
def test_queue_smoke():
    """bench queue: every figure present and consistent; nothing left behind (the rates are not judged here)."""
    before = bench_databases()
    r = json.loads(run("queue", "--n-single", "400", "--n-multi", "2000", "--n-stock", "200", "--per-task", "100",
                       "--batch-size", "64", "--worker-env", "EMBEDCLF_GC_THRESHOLD=0", "--json").stdout)
    assert r["worker_env"] == {"EMBEDCLF_GC_THRESHOLD": "0"}
    for key in ("stock_celery_tasks_per_s", "worker_tasks_per_s", "worker_texts_per_s_multi", "stock_send_task_per_s",
                "enqueue_texts_per_s", "ratio_worker_vs_stock", "ratio_enqueue_vs_stock", "worker_tasks_per_s_events",
                "events_cost_ratio", "worker_tasks_per_s_results", "results_cost_ratio"):
        assert positive(r[key]), key
    assert r["ratio_worker_vs_stock"] == pytest.approx(r["worker_tasks_per_s"] / r["stock_celery_tasks_per_s"],
                                                       rel=0.01)
    assert r["worker_single"]["error_rows"] == 0 and r["worker_multi"]["error_rows"] == 0
    # a worker stamps each batch with its own completed_at, so batches are counted exactly (three write threads
    # stamping with their transactions' now() once made two batches of a fast run look like one)
    assert r["worker_single"]["batches"] >= 400 / 64 and r["worker_single"]["max_batch_rows"] <= 64
    assert (r["worker_multi"]["batches"], r["worker_multi"]["max_batch_rows"]) == (20, 100)  # a task is whole
    # where a row's CPU went: the worker's threads by name and the local Postgres server's backends, over every
    # row (the queue is held back until the readings are taken: none is written before them)
    multi = r["worker_multi"]
    assert multi["worker_us_per_row"] == pytest.approx(1e6 * sum(multi["worker_cpu_s"].values()) / 2000, abs=0.1)
    assert positive(multi["worker_us_per_row"]) and positive(multi["postgres_us_per_row"])
    assert any(name.startswith("ec-") for name in multi["worker_cpu_s"]), multi["worker_cpu_s"]  # the worker's own
    check_machine(r["machine"], "null:64")
    assert bench_databases() <= before


@pytest.mark.postgres
@pytest.mark.redis
def test_bad_options_get_one_line():
    before = bench_databases()
    one_line_error(run("queue", "--worker-env", "EMBEDCLF_RESULT_BACKEND=redis://x", ok=False),
                   "set by the benchmark itself")
    one_line_error(run("queue", "--worker-env", "EMBEDCLF_GC_THRESHOLD=-1", ok=False), "EMBEDCLF_GC_THRESHOLD must be")
    assert bench_databases() <= before
