"""``bench queue``: what the message path costs, without a model, against stock Celery in the same run.

In one run, on a private Redis DB and a throw-away database:

1. stock ``send_task`` rate (a loop, one message per call) and the stock Celery ceiling: a solo
   worker with a no-op task (JSON, acks late, prefetch 64) draining a queue filled beforehand;
2. our bulk enqueue rate (``Client.classify_many``: multi-text tasks, Lua pushes) and, as a
   second figure, its rate with one task per text;
3. our worker with the ``null:64`` embedder draining single-text tasks, the same with task events
   on (``-E``), the same storing Celery results in a Redis result backend, then multi-text tasks;
   the queue is filled first and the worker started after, and the rate is timed from the
   worker's first committed batch to its last, so the producer is not what is measured.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedclf.bench import BenchError
from embedclf.bench.infra import claim_redis_db, temp_database
from embedclf.bench.procs import WorkerProc, server_cpu_delta, server_cpu_s, subprocess_env, wait_ready
from embedclf.config import Settings

SPEC = "null:64"
HEAD = "bench"
COUNTER = "embedclf:bench:count"
#: our worker's settings this benchmark sets itself, beyond e2e's (not allowed in ``--worker-env``)
QUEUE_SETS = frozenset({"EMBEDCLF_LOG_LEVEL", "EMBEDCLF_MAX_PAYLOAD_BYTES", "EMBEDCLF_RESULT_BACKEND"})


@dataclass(frozen=True)
class QueueParams:
    n_single: int = 20_000
    n_multi: int = 100_000
    n_stock: int = 3_000
    per_task: int = 256
    batch_size: int = 256
    max_wait_ms: int = 20
    timeout_s: float = 300.0
    head: str = "linear"
    #: more EMBEDCLF_* settings for our worker (an A/B of a worker setting in one command)
    worker_env: tuple[tuple[str, str], ...] = ()


def _texts(n: int) -> list[str]:
    return [f"message number {i} about an order that has not arrived" for i in range(n)]


#: the benchmark's heads: the message path is measured with the cheapest real head (one softmax layer
#: over the null embedding: calibration, top-3, rows), as the embedder is the cheapest real embedder;
#: ``mlp`` is the default head (3-layer MLP + softmax-regression member), a model cost of its own
HEAD_LAYERS = {"linear": 1, "mlp": None}


def _store_head(engine, kind: str = "linear") -> None:
    from embedclf.embedders.null import NullEmbedder
    from embedclf.headops import quick_version

    texts = [("x" * (i % 97 + 1)) for i in range(400)]
    labels = ["short" if len(t) < 48 else "long" for t in texts]
    emb = NullEmbedder(64)
    quick_version(engine, HEAD, emb.embed_batch(texts), labels, emb.model_id, epochs=3, created_by="embedclf-bench",
                  layers=HEAD_LAYERS[kind])


def _wait(cond: Callable[[], bool], timeout: float, what: str, check: Callable[[], None] = lambda: None,
          interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        check()
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not finish within {timeout:.0f}s")
        time.sleep(interval)


def stock_send_rate(broker: str, n: int) -> float:
    from celery import Celery

    from embedclf.bench.stock_app import QUEUE, TASK

    app = Celery(broker=broker, set_as_current=False)
    app.conf.task_serializer = "json"
    with app.producer_or_acquire() as producer:
        app.send_task(TASK, kwargs={"i": -1}, queue=QUEUE, producer=producer)  # connect first
        t0 = time.perf_counter()
        for i in range(n):
            app.send_task(TASK, kwargs={"i": i}, queue=QUEUE, producer=producer)
        dt = time.perf_counter() - t0
    app.close()
    return n / dt


def stock_worker_rate(broker: str, n: int, log_dir: Path, timeout: float) -> float:
    """The queue holds n + 1 messages; the rate from the first INCR to the last."""
    import redis

    r = redis.Redis.from_url(broker)
    env = subprocess_env({"EMBEDCLF_BENCH_BROKER": broker, "EMBEDCLF_BENCH_COUNTER": COUNTER})
    w = WorkerProc("stock", env, log_dir, app="embedclf.bench.stock_app")
    try:
        _wait(lambda: int(r.get(COUNTER) or 0) > 0, timeout, "the stock worker's first task", w.check_alive)
        t0, c0 = time.perf_counter(), int(r.get(COUNTER) or 0)
        _wait(lambda: int(r.get(COUNTER) or 0) >= n + 1, timeout, "the stock worker", w.check_alive)
        return (n + 1 - c0) / (time.perf_counter() - t0)
    finally:
        w.stop()
        r.close()


def worker_rate(engine, env: dict[str, str], log_dir: Path, name: str, n_rows: int, timeout: float,
                extra_args: tuple[str, ...] = (), *, hold: tuple[Any, str]) -> dict:
    """Start our worker on a filled queue; rows per second from its first committed batch to its last, and
    the CPU a row cost the worker (by thread) and the Postgres server.

    ``hold``: (Redis client, queue name). The filled queue is renamed away while the worker starts and put
    back (one ``RENAME`` each way) once it is ready and the CPU readings are taken, so they cover every row."""
    from sqlalchemy import text

    from embedclf.bench.e2e import cpu_by_thread

    r, queue = hold
    held = f"{queue}:held-by-bench"
    r.rename(queue, held)
    w = WorkerProc(name, env, log_dir, extra_args=extra_args)
    try:
        wait_ready([w], 120)

        def count() -> int:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM predictions")).scalar() or 0)

        cpu_before, pg_before, rows_before = w.thread_cpu_s(), server_cpu_s(engine), count()
        r.rename(held, queue)
        # counting a large table takes the server's CPU from the worker: look twice a second (the rate
        # is timed from the rows' own commit times, not from when the count saw them)
        _wait(lambda: count() >= n_rows, timeout, f"worker {name}", w.check_alive, interval=0.5)
        rss = w.peak_rss_mb()
        cpu = cpu_by_thread([cpu_before], [w.thread_cpu_s()])  # before the stop: /proc/<pid> goes with it
        pg_cpu = server_cpu_delta(pg_before, server_cpu_s(engine))
    finally:
        w.stop()
        if r.exists(held):  # the worker never became ready: the queue goes back as it was
            r.rename(held, queue)
    measured = n_rows - rows_before  # rows written after the readings began (none: no per-row figures)

    def per_row(seconds: float | None) -> float | None:
        return None if seconds is None or measured <= 0 else round(1e6 * seconds / measured, 1)
    with engine.begin() as conn:
        first, last, errors = conn.execute(text(
            "SELECT min(completed_at), max(completed_at), count(*) FILTER (WHERE status <> 'ok') "
            "FROM predictions")).one()
        in_first = conn.execute(text("SELECT count(*) FROM predictions WHERE completed_at = :t"), {"t": first}).scalar()
        # one completed_at per batch (unique in a worker process: worker/writer.py Stamps)
        batches, biggest = conn.execute(text(
            "SELECT count(*), max(n) FROM (SELECT count(*) AS n FROM predictions GROUP BY completed_at) c")).one()
        conn.execute(text("TRUNCATE predictions"))
    span = (last - first).total_seconds()
    if span <= 0:
        raise BenchError(f"worker {name} wrote everything in one batch: use more texts")
    return {"rows_per_s": round((n_rows - in_first) / span, 1), "seconds": round(span, 3), "batches": batches,
            "max_batch_rows": biggest,
            "error_rows": errors, "rss_mb": None if rss is None else round(rss, 1),
            # the worker's threads, and the server (its backends for this database: the worker's writes and
            # this benchmark's count twice a second), per row written after the worker was ready
            "worker_cpu_s": cpu, "worker_us_per_row": per_row(sum(cpu.values())),
            "postgres_us_per_row": per_row(pg_cpu)}


def run_queue(params: QueueParams, settings: Settings, quiet: bool) -> dict:
    from embedclf.client import Client
    from embedclf.store.db import make_engine

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    out: dict = {"n_single": params.n_single, "n_multi": params.n_multi, "n_stock": params.n_stock,
                 "per_task": params.per_task, "batch_max_size": params.batch_size, "embedder": SPEC,
                 "head": params.head, "worker_env": dict(params.worker_env)}
    with ExitStack() as stack:
        broker = stack.enter_context(claim_redis_db(settings.broker_url))
        db_url = stack.enter_context(temp_database(settings.database_url))
        engine = make_engine(db_url, pool_size=1, max_overflow=1)
        stack.callback(engine.dispose)
        log_dir = Path(tempfile.mkdtemp(prefix="embedclf-bench-queue-"))
        _store_head(engine, params.head)
        import redis

        r = redis.Redis.from_url(broker)
        stack.callback(r.close)

        say(f"stock: send_task x {params.n_stock}, then a solo Celery worker drains them ...")
        out["stock_send_task_per_s"] = round(stock_send_rate(broker, params.n_stock), 1)
        out["stock_celery_tasks_per_s"] = round(stock_worker_rate(broker, params.n_stock, log_dir, params.timeout_s), 1)

        queue = settings.queue
        client = Client(broker, queue, max_payload_bytes=settings.max_payload_bytes,
                        max_texts_per_task=settings.max_texts_per_task)
        stack.callback(client.close)
        texts = _texts(max(params.n_single, params.n_multi))
        say(f"ours: enqueue {params.n_single} single-text tasks, then start a worker ...")
        t0 = time.perf_counter()
        client.classify_many(HEAD, texts[:params.n_single], per_task=1)
        out["enqueue_single_tasks_per_s"] = round(params.n_single / (time.perf_counter() - t0), 1)
        env = subprocess_env({
            **dict(params.worker_env),
            "EMBEDCLF_DATABASE_URL": db_url, "EMBEDCLF_BROKER_URL": broker, "EMBEDCLF_QUEUE": queue,
            "EMBEDCLF_EMBEDDER": SPEC, "EMBEDCLF_BATCH_MAX_SIZE": str(params.batch_size),
            "EMBEDCLF_BATCH_MAX_WAIT_MS": str(params.max_wait_ms), "EMBEDCLF_LOG_LEVEL": "INFO",
            "EMBEDCLF_MAX_PAYLOAD_BYTES": str(settings.max_payload_bytes),
        })
        single = worker_rate(engine, env, log_dir, "single", params.n_single, params.timeout_s, hold=(r, queue))
        out["worker_tasks_per_s"] = single["rows_per_s"]
        out["worker_single"] = single

        say(f"ours: the same {params.n_single} single-text tasks with task events on (-E) ...")
        client.classify_many(HEAD, texts[:params.n_single], per_task=1)
        events = worker_rate(engine, env, log_dir, "events", params.n_single, params.timeout_s, ("-E",),
                             hold=(r, queue))
        out["worker_tasks_per_s_events"] = events["rows_per_s"]

        say(f"ours: the same {params.n_single} single-text tasks storing Celery results (result backend) ...")
        client.classify_many(HEAD, texts[:params.n_single], per_task=1)
        with_results = worker_rate(engine, {**env, "EMBEDCLF_RESULT_BACKEND": broker}, log_dir, "results",
                                   params.n_single, params.timeout_s, hold=(r, queue))
        out["worker_tasks_per_s_results"] = with_results["rows_per_s"]
        stored = sum(1 for _ in r.scan_iter("celery-task-meta-*", count=1000))
        if stored < params.n_single:
            raise BenchError(f"only {stored} of {params.n_single} results stored in the backend")

        say(f"ours: enqueue {params.n_multi} texts in tasks of {params.per_task}, then start a worker ...")
        r.delete(queue)
        t0 = time.perf_counter()
        client.classify_many(HEAD, texts[:params.n_multi], per_task=params.per_task)
        out["enqueue_texts_per_s"] = round(params.n_multi / (time.perf_counter() - t0), 1)
        multi = worker_rate(engine, env, log_dir, "multi", params.n_multi, params.timeout_s, hold=(r, queue))
        out["worker_texts_per_s_multi"] = multi["rows_per_s"]
        out["worker_multi"] = multi
    out["ratio_worker_vs_stock"] = round(out["worker_tasks_per_s"] / out["stock_celery_tasks_per_s"], 2)
    out["ratio_worker_multi_vs_stock"] = round(out["worker_texts_per_s_multi"] / out["stock_celery_tasks_per_s"], 2)
    out["ratio_enqueue_vs_stock"] = round(out["enqueue_texts_per_s"] / out["stock_send_task_per_s"], 2)
    out["events_cost_ratio"] = round(out["worker_tasks_per_s_events"] / out["worker_tasks_per_s"], 3)
    out["results_cost_ratio"] = round(out["worker_tasks_per_s_results"] / out["worker_tasks_per_s"], 3)
    out["ratio_enqueue_single_vs_stock"] = round(out["enqueue_single_tasks_per_s"] / out["stock_send_task_per_s"], 2)
    import shutil

    shutil.rmtree(log_dir, ignore_errors=True)
    return out
