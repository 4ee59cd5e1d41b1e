"""``bench e2e``: producer process -> Redis -> K worker processes -> Postgres, against raw embed speed.

Everything lives in a throw-away database and Redis DB index (see :mod:`.infra`); an
ExitStack tears it down in reverse order (producer, workers, engine, database, Redis)
whatever happens, Ctrl-C included.
"""

from __future__ import annotations

import datetime as dt
import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from embedclf.bench import BenchError, raw
from embedclf.bench.infra import claim_redis_db, temp_database
from embedclf.bench.poll import last_row_id, wait_rows
from embedclf.bench.procs import (
    Producer,
    WorkerProc,
    free_port,
    server_cpu_delta,
    server_cpu_s,
    subprocess_env,
    wait_ready,
)
from embedclf.bench.stats import batch_distribution, mean_ci, percentiles, rate
from embedclf.config import BatchSettings, Settings
from embedclf.embedders.base import Embedder
from embedclf.progress import bar as progress_bar

HEAD = "bench"
#: the head only has to exist and match the embedder; its quality is irrelevant here
HEAD_EPOCHS = 5
HEAD_MAX_TEXTS = 2000
#: ``--head`` -> the kNN member's mode (``heads train --knn-member``); "hybrid" and "dense" have none
KNN_MEMBER = {"default": "auto", "full": "on"}
#: the workers' settings the benchmark sets itself (not allowed in ``--worker-env``)
BENCH_SETS = frozenset({
    "EMBEDCLF_DATABASE_URL", "EMBEDCLF_BROKER_URL", "EMBEDCLF_QUEUE", "EMBEDCLF_EMBEDDER", "EMBEDCLF_MODEL_DIR",
    "EMBEDCLF_BATCH_MAX_SIZE", "EMBEDCLF_BATCH_MAX_WAIT_MS", "EMBEDCLF_METRICS_PORT",
})


@dataclass(frozen=True)
class E2EParams:
    spec: str
    workers: int = 1
    batch_size: int = BatchSettings().max_size
    max_wait_ms: int = 50
    #: tasks/s sent one by one (0: all at once, as fast as the producer can)
    rate: float = 0.0
    #: texts per task when sending all at once (None: the batch size, so a task fills a batch)
    per_task: int | None = None
    ready_timeout_s: float = 300.0
    timeout_s: float = 900.0
    #: raw pass + end-to-end pass, alternating this many times on the same workers (median ratio reported)
    rounds: int = 1
    #: the head the workers serve: "default" (as ``heads train``), "full" (the kNN member kept whatever the
    #: validation split says), "hybrid" (no kNN member) or "dense" (no TF-IDF or kNN member)
    head: str = "default"
    #: more EMBEDCLF_* settings for the workers (an A/B of a worker setting in one command)
    worker_env: tuple[tuple[str, str], ...] = ()


def _stop_all(workers: Sequence[WorkerProc]) -> None:
    for w in workers:
        w.stop()


def store_head(engine, embedder: Embedder, texts: Sequence[str], labels: Sequence[str], quiet: bool,
               head: str = "default", batch_size: int = BatchSettings().max_size) -> tuple[int, dict]:
    """Train a quick head on the first texts and store it as the active head ``bench``.

    ``head``: ``default`` is the head ``heads train`` makes by default (MLP + softmax regression +
    the TF-IDF member, which reads the texts in the worker, + the kNN member when the validation split
    keeps it); ``full`` keeps the kNN member whatever the split says, ``hybrid`` leaves it out, ``dense``
    leaves out both.
    Returns the texts it was trained on and the head's own cost, timed here on those texts in
    batches of ``batch_size`` (``head_us_per_text``: what the head adds to each text's embedding).
    """
    from embedclf.headops import quick_version

    # evenly spread over the file: a file sorted by label still gives the head several labels
    step = max(1, len(texts) // HEAD_MAX_TEXTS)
    texts, labels = list(texts[::step][:HEAD_MAX_TEXTS]), list(labels[::step][:HEAD_MAX_TEXTS])
    k = len(texts)
    with progress_bar(total=k, desc="head: embedding", unit="text", disable=quiet, leave=False) as bar:
        X = embedder.embed(texts, progress=bar.update)
    trained: list = []
    quick_version(engine, HEAD, X, labels, embedder.model_id, HEAD_EPOCHS, created_by="embedclf-bench",
                  texts=None if head == "dense" else texts, trained=trained,
                  knn_member=KNN_MEMBER.get(head, "off"))
    members = trained[0].member_names
    one, two = (head_cost_us(trained[0], X, texts, batch_size, threads=n) for n in (1, 2))
    return k, {"head": head, "head_members": members, "head_us_per_text": round(one, 1),
               "head_speedup_2_threads": round(one / two, 3) if two > 0 else None}


def head_cost_us(module, X, texts: Sequence[str], batch_size: int, threads: int = 1) -> float:
    """Microseconds per text of ``module.predict_proba`` over ``X`` in batches, each thread with one torch thread
    (as workers run heads: ``EMBEDCLF_HEAD_THREADS``); the best of three passes. ``threads``: that many threads
    at once take every ``threads``-th batch (a worker's text pool, ``EMBEDCLF_TEXT_THREADS``)."""
    from concurrent.futures import ThreadPoolExecutor

    from embedclf.classify import torch_threads

    starts = list(range(0, len(texts), batch_size))

    def run(mine: list[int]) -> None:
        with torch_threads(1):
            for i in mine:
                module.predict_proba(X[i:i + batch_size], texts[i:i + batch_size])

    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(3):
            t0 = time.perf_counter()
            list(pool.map(run, [starts[j::threads] for j in range(threads)]))
            best = min(best, time.perf_counter() - t0)
    return 1e6 * best / max(1, len(texts))


def fetch_rows(engine, since: float | None = None) -> list[dict]:
    """The result rows; with ``since`` (a Unix time) only those of tasks enqueued from then on."""
    from sqlalchemy import select

    from embedclf.store.tables import predictions as p

    with engine.connect() as conn:
        q = select(p.c.worker, p.c.status, p.c.error, p.c.enqueued_at, p.c.completed_at)
        if since is not None:
            # a round's first task is stamped at or just after the producer's first send time
            q = q.where(p.c.enqueued_at >= dt.datetime.fromtimestamp(since - 0.001, dt.timezone.utc))
        return [dict(r._mapping) for r in conn.execute(q)]


def summarize_rows(rows: Sequence[dict], max_batch: int) -> dict:
    """Throughput, latency percentiles, batch sizes and errors from the result rows."""
    ok_times = [r for r in rows if r["enqueued_at"] is not None]
    if not ok_times:
        raise BenchError("no rows carry enqueued_at; cannot measure latency")
    first = min(r["enqueued_at"] for r in ok_times)
    last = max(r["completed_at"] for r in rows)
    span = (last - first).total_seconds()
    lat = percentiles([1000.0 * (r["completed_at"] - r["enqueued_at"]).total_seconds() for r in ok_times])
    errors = [r for r in rows if r["status"] != "ok"]
    return {
        "rows": len(rows),
        "e2e_seconds": round(span, 3),
        "e2e_texts_per_s": round(rate(len(rows), span), 2),
        "p50_ms": round(lat["p50"], 1), "p95_ms": round(lat["p95"], 1), "p99_ms": round(lat["p99"], 1),
        "latency_mean_ms": round(lat["mean"], 1), "latency_max_ms": round(lat["max"], 1),
        # a worker stamps each batch with its own completed_at (worker/writer.py), so (worker, completed_at) names one
        "batch_sizes": batch_distribution(((r["worker"], r["completed_at"]) for r in rows), max_batch),
        "rows_per_worker": {w: sum(r["worker"] == w for r in rows) for w in sorted({r["worker"] for r in rows})},
        "error_rows": len(errors),
        "first_error": errors[0]["error"] if errors else None,
        "first_enqueue": first.astimezone(dt.timezone.utc).isoformat(),
    }


def cpu_by_thread(before: Sequence[dict[str, float]], after: Sequence[dict[str, float]]) -> dict[str, float]:
    """CPU seconds the workers' threads spent during the run, summed over workers by thread name."""
    out: dict[str, float] = {}
    for b, a in zip(before, after):
        for name, s in a.items():
            out[name] = out.get(name, 0.0) + s - b.get(name, 0.0)
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.005}


def busy_figures(before: Sequence[dict[str, float]], after: Sequence[dict[str, float]], rows: dict) -> dict:
    """Where the workers' time went in a round, from their metrics: seconds in embed + heads
    (``worker_inference_s``) and in Postgres writes, summed over workers; the share of the
    round the batch threads spent in the model (``model_busy``, 1.0 = never waiting for work);
    and the texts/s of the model inside the workers (``inference_texts_per_s``, to set against raw)."""
    def delta(key: str) -> float | None:
        if not after or any(key not in a for a in after):
            return None
        return sum(a[key] - b.get(key, 0.0) for b, a in zip(before, after))

    inference, write = delta("embedclf_inference_seconds_sum"), delta("embedclf_write_seconds_sum")
    if inference is None:
        return {}
    span = rows["e2e_seconds"] * len(after)
    return {"worker_inference_s": round(inference, 3), "worker_write_s": None if write is None else round(write, 3),
            "model_busy": round(inference / span, 3) if span > 0 else None,
            "inference_texts_per_s": round(rate(rows["rows"], inference), 2)}


def bracketed(before: raw.RawRun, after: raw.RawRun, n: int) -> dict:
    """The raw figures an end-to-end pass is compared with: the mean time of the raw passes just before and
    just after it (a drift of the host's speed over the round cancels out to first order)."""
    seconds = (before.seconds + after.seconds) / 2
    return {"raw_seconds": round(seconds, 3), "raw_texts_per_s": round(rate(n, seconds), 2),
            "raw_before_texts_per_s": round(before.texts_per_s, 2),
            "raw_after_texts_per_s": round(after.texts_per_s, 2)}


def _raw_run(load: Callable[[str], Embedder], spec: str, texts: Sequence[str], batch_size: int, quiet: bool,
             label: str) -> raw.RawRun:
    """Load the embedder in this process, time it on ``texts``, free it (the workers hold their own copy)."""
    embedder = load(spec)
    try:
        return raw.measure(embedder, texts, batch_size, quiet=quiet, label=label)
    finally:
        embedder.close()
        del embedder
        gc.collect()


def run_e2e(texts: Sequence[str], labels: Sequence[str], params: E2EParams, settings: Settings,
            load: Callable[[str], Embedder], quiet: bool,
            head_data: tuple[Sequence[str], Sequence[str]] | None = None) -> dict:
    """The whole run; returns the figures (see README "Benchmarks").

    ``head_data`` (texts, labels) trains the throw-away head (default: the texts sent).
    With ``params.rounds`` > 1 the raw pass and the end-to-end pass alternate, round after round,
    on the same workers: each round's ratio compares two passes run a minute apart, and the
    figures reported are the round with the median ratio (every round's are listed).
    """
    n = len(texts)
    with ExitStack() as stack:
        redis_url = stack.enter_context(claim_redis_db(settings.broker_url))
        db_url = stack.enter_context(temp_database(settings.database_url))
        from sqlalchemy.engine import make_url

        from embedclf.store.db import make_engine

        engine = make_engine(db_url, pool_size=1, max_overflow=1)
        stack.callback(engine.dispose)

        # 1. in this process: head, then raw speed on the same texts, order and batch size
        embedder = load(params.spec)
        try:
            model_id = embedder.model_id
            head_texts, head_labels = head_data if head_data is not None else (texts, labels)
            head_n, head_figures = store_head(engine, embedder, head_texts, head_labels, quiet, params.head,
                                              params.batch_size)
            raw_runs = [raw.measure(embedder, texts, params.batch_size, quiet=quiet, label="raw")]
        finally:
            embedder.close()  # free the model before the workers load theirs
            del embedder
            gc.collect()

        # 2. K workers on the private database and Redis DB
        log_dir = Path(tempfile.mkdtemp(prefix="embedclf-bench-"))
        env = subprocess_env({
            "EMBEDCLF_DATABASE_URL": db_url, "EMBEDCLF_BROKER_URL": redis_url, "EMBEDCLF_QUEUE": settings.queue,
            "EMBEDCLF_EMBEDDER": params.spec, "EMBEDCLF_MODEL_DIR": settings.model_dir,
            "EMBEDCLF_BATCH_MAX_SIZE": str(params.batch_size), "EMBEDCLF_BATCH_MAX_WAIT_MS": str(params.max_wait_ms),
            "EMBEDCLF_BATCH_MAX_TOKENS": str(settings.batch.max_tokens),
            "EMBEDCLF_HEAD_REFRESH_S": str(settings.head_refresh_s),
            "EMBEDCLF_MAX_TEXT_CHARS": str(settings.max_text_chars),
            "EMBEDCLF_VISIBILITY_TIMEOUT_S": str(settings.visibility_timeout_s),
            "EMBEDCLF_LOG_LEVEL": settings.log_level,
            **dict(params.worker_env),
        })
        workers: list[WorkerProc] = []
        stack.callback(_stop_all, workers)
        if not quiet:
            print(f"starting {params.workers} worker(s), logs in {log_dir} ...", file=sys.stderr)
        for i in range(params.workers):
            workers.append(WorkerProc(f"bench{i + 1}", env, log_dir, metrics_port=free_port()))
        wait_ready(workers, params.ready_timeout_s)

        # 3. each round: (raw again, from the second round) a producer process enqueues the texts;
        #    poll Postgres until every row of the round is there
        per_task = params.per_task or params.batch_size
        rounds: list[dict] = []
        rss: list[float | None] = []
        for r in range(params.rounds):
            if r > 0:
                raw_runs.append(_raw_run(load, params.spec, texts, params.batch_size, quiet, f"raw, round {r + 1}"))
            mark = last_row_id(engine)
            cpu_before = [w.thread_cpu_s() for w in workers]
            pg_before = server_cpu_s(engine)
            sums_before = [w.metric_sums() for w in workers]
            producer = Producer(redis_url, settings.queue, HEAD, texts, log_dir, subprocess_env({}), rate=params.rate,
                                per_task=per_task)
            stack.callback(producer.stop)
            wait_rows(engine, n, workers, producer, params.timeout_s, quiet, after_id=mark)
            sent = producer.result()
            rss = [w.peak_rss_mb() for w in workers]  # before SIGTERM: /proc/<pid> goes away with the process
            cpu = cpu_by_thread(cpu_before, [w.thread_cpu_s() for w in workers])
            pg_cpu = server_cpu_delta(pg_before, server_cpu_s(engine))
            figures = summarize_rows(fetch_rows(engine, since=float(sent["start"])), params.batch_size)
            figures.update(busy_figures(sums_before, [w.metric_sums() for w in workers], figures))
            enqueue_s = float(sent["end"]) - float(sent["start"])
            figures.update(
                enqueue_seconds=round(enqueue_s, 3), enqueue_texts_per_s=round(rate(int(sent["sent"]), enqueue_s), 1),
                worker_cpu_s=cpu, postgres_cpu_s=None if pg_cpu is None else round(pg_cpu, 4),
                postgres_us_per_row=None if pg_cpu is None else round(1e6 * pg_cpu / max(1, figures["rows"]), 1),
            )
            rounds.append(figures)
        # a last raw pass after the last round: each end-to-end pass is then bracketed by a raw pass before and
        # one after it, and compared with their mean (the speed of this host drifts within seconds)
        raw_runs.append(_raw_run(load, params.spec, texts, params.batch_size, quiet, "raw, after the last round"))
        for r, figures in enumerate(rounds):
            figures.update(bracketed(raw_runs[r], raw_runs[r + 1], n))
            figures["ratio"] = round(figures["e2e_texts_per_s"] / figures["raw_texts_per_s"], 3)
        _stop_all(workers)

        median = sorted(rounds, key=lambda f: f["ratio"])[(len(rounds) - 1) // 2]
        figures = dict(median)
        # every round's ratio, not only the median one: the host's speed scatters the rounds (±5-10 % on a
        # shared 2-core VM), so a figure near a target needs the mean and its interval to be read
        ci = mean_ci([f["ratio"] for f in rounds])
        figures.update(ratio_mean=round(ci["mean"], 4),
                       ratio_ci95=None if ci["lo"] is None else [round(ci["lo"], 4), round(ci["hi"], 4)])
        known_rss = [x for x in rss if x is not None]
        figures.update(
            n=n, workers=params.workers, embedder=model_id, embedder_spec=params.spec,
            batch_max_size=params.batch_size, batch_max_wait_ms=params.max_wait_ms,
            batch_max_tokens=settings.batch.max_tokens, rate=params.rate or None,
            per_task=None if params.rate else per_task,
            worker_rss_mb=round(max(known_rss), 1) if known_rss else None,
            worker_rss_mb_each=[None if x is None else round(x, 1) for x in rss],
            worker_ready_s=[None if w.ready_after_s is None else round(w.ready_after_s, 1) for w in workers],
            head_train_texts=head_n, **head_figures,
            head_vs_embed=round(head_figures["head_us_per_text"] * figures["raw_texts_per_s"] / 1e6, 4),
            database=make_url(db_url).database,
            redis_db=int(urlsplit(redis_url).path.strip("/")),
            rounds=len(rounds), median_round=rounds.index(median) + 1, worker_env=dict(params.worker_env),
            round_figures=[{k: f.get(k) for k in ("raw_texts_per_s", "raw_before_texts_per_s", "raw_after_texts_per_s",
                                                  "e2e_texts_per_s", "ratio", "p50_ms", "p95_ms",
                                                  "inference_texts_per_s", "model_busy", "postgres_cpu_s",
                                                  "postgres_us_per_row")} for f in rounds],
        )
    shutil.rmtree(log_dir, ignore_errors=True)  # kept when the run failed: error messages point at it
    return figures
