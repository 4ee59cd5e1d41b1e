"""``bench http``: the HTTP API's throughput and latency at a fixed request rate, every request waiting.

Everything lives in a throw-away database and Redis DB index (see :mod:`.infra`): a head is trained
on the demo data with the embedder under test, one worker and ``embedclf serve`` (with a bearer
token) run as subprocesses, and an open-loop load generator in this process sends request *i* at
``t0 + i / rate`` whatever the earlier requests do (a slow server shows as latency, not as a lower
send rate). Each request is ``POST /v1/classify`` with one text and ``wait: true``. Latency is
measured from a request's slot in the schedule to its answer; the rows' own ``enqueued_at`` ->
``completed_at`` (queue and worker) are reported next to it, so the difference is what HTTP,
enqueueing and the wake-up through LISTEN/NOTIFY add.
"""

from __future__ import annotations

import asyncio
import gc
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from embedclf.bench import BenchError
from embedclf.bench.e2e import HEAD, store_head, summarize_rows
from embedclf.bench.infra import claim_redis_db, temp_database
from embedclf.bench.procs import ChildProc, WorkerProc, last_line, subprocess_env, wait_ready
from embedclf.bench.stats import percentiles, rate
from embedclf.config import Settings
from embedclf.embedders.base import Embedder


@dataclass(frozen=True)
class HttpParams:
    spec: str
    #: measured requests
    n: int = 300
    #: requests per second, on a fixed schedule
    rate: float = 20.0
    batch_size: int = 64
    max_wait_ms: int = 50
    #: each request's ``timeout_s``
    timeout_s: float = 60.0
    #: requests sent one at a time before the measured ones (connections, first batch); not counted
    warmup: int = 5
    ready_timeout_s: float = 300.0


class ServerProc(ChildProc):
    """``embedclf serve`` in a subprocess on ``port``, logging to a file."""

    def __init__(self, env: dict[str, str], log_dir: Path, port: int) -> None:
        self.port = port
        super().__init__([sys.executable, "-m", "embedclf", "serve", "--host", "127.0.0.1", "--port", str(port),
                          "--no-access-log", "--log-level", "warning"], env, log_dir / "serve.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"embedclf serve exited with code {self.proc.returncode}: "
                             f"{last_line(self.log_path.read_text(errors='replace'))} (log: {self.log_path})")

    def wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"embedclf serve not ready after {timeout:.0f}s (log: {self.log_path})")
            time.sleep(0.2)


async def _load(url: str, token: str, texts: Sequence[str], params: HttpParams, first: int) -> list[dict]:
    """Send the requests on their schedule; one record per request (times from ``time.perf_counter``)."""
    import httpx

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=params.timeout_s + 10) as client:
        async def one(i: int, at: float) -> dict:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            sent = time.perf_counter()
            body = {"head": HEAD, "text": texts[(first + i) % len(texts)], "request_id": first + i, "wait": True,
                    "timeout_s": params.timeout_s}
            out: dict[str, Any] = {"scheduled": at, "sent": sent, "status": None, "task_id": None, "error": None}
            try:
                r = await client.post("/v1/classify", json=body)
                out["status"] = r.status_code
                out["timing"] = server_timing(r.headers.get("server-timing", ""))
                reply = r.json()
                out["task_id"] = reply.get("task_id")
                if r.status_code != 200 or reply.get("status") != "ok":
                    out["error"] = r.text[:300]
            except (httpx.HTTPError, ValueError) as exc:
                out["error"] = f"{type(exc).__name__}: {exc}"[:300]
            out["done"] = time.perf_counter()
            return out

        for i in range(params.warmup):  # one at a time, not measured
            warm = await one(i, time.perf_counter())
            if warm["status"] != 200:
                raise BenchError(f"warm-up request failed: {warm['error']}")
        t0 = time.perf_counter() + 0.05
        return list(await asyncio.gather(*(one(params.warmup + i, t0 + i / params.rate) for i in range(params.n))))


def server_timing(header: str) -> dict[str, float]:
    """``{"parse": ms, "enqueue": ms, "wait": ms}`` from a ``Server-Timing`` header."""
    out: dict[str, float] = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";dur=")
        try:
            out[name] = float(rest)
        except ValueError:
            continue
    return out


def row_figures(engine, task_ids: Sequence[str], batch_size: int) -> dict:
    """Queue + worker latency and batch sizes from the measured requests' rows."""
    from sqlalchemy import select

    from embedclf.store.tables import predictions as p

    with engine.connect() as conn:
        q = select(p.c.worker, p.c.status, p.c.error, p.c.enqueued_at, p.c.completed_at) \
            .where(p.c.task_id.in_(list(task_ids)))
        rows = [dict(r._mapping) for r in conn.execute(q)]
    if not rows:
        return {"rows": 0}
    s = summarize_rows(rows, batch_size)
    return {"rows": s["rows"], "queue_p50_ms": s["p50_ms"], "queue_p95_ms": s["p95_ms"],
            "queue_p99_ms": s["p99_ms"], "batch_sizes": s["batch_sizes"]}


def summarize(records: Sequence[dict], params: HttpParams) -> dict:
    ok = [r for r in records if r["status"] == 200 and r["error"] is None]
    statuses: dict[str, int] = {}
    for r in records:
        key = str(r["status"]) if r["status"] is not None else "no answer"
        statuses[key] = statuses.get(key, 0) + 1
    start = min(r["scheduled"] for r in records)
    span = max(r["done"] for r in records) - start
    out = {
        "requests": len(records), "ok": len(ok), "statuses": statuses,
        "offered_rate": params.rate, "seconds": round(span, 3),
        "throughput_per_s": round(rate(len(ok), span), 2),
        "send_lag_max_ms": round(1000 * max(r["sent"] - r["scheduled"] for r in records), 1),
        "first_error": next((r["error"] for r in records if r["error"]), None),
    }
    if ok:
        lat = percentiles([1000.0 * (r["done"] - r["scheduled"]) for r in ok])
        out.update({f"{k}_ms" if k.startswith("p") else f"latency_{k}_ms": round(v, 1) for k, v in lat.items()})
        # the server's own view (Server-Timing): body checks, heads check + enqueue, wait for the rows
        for part in ("parse", "enqueue", "wait"):
            values = [r["timing"][part] for r in ok if part in r.get("timing", {})]
            if values:
                p = percentiles(values)
                out[f"server_{part}_p50_ms"], out[f"server_{part}_p99_ms"] = round(p["p50"], 1), round(p["p99"], 1)
    return out


def run_http(params: HttpParams, settings: Settings, load: Callable[[str], Embedder], quiet: bool) -> dict:
    """The whole run; returns the figures (see docs/http.md, "Benchmark")."""
    from embedclf.data import load_labeled
    from embedclf.demo import HOLDOUT_CSV, TRAIN_CSV

    log_dir = Path(tempfile.mkdtemp(prefix="embedclf-bench-http-"))
    with ExitStack() as stack:
        redis_url = stack.enter_context(claim_redis_db(settings.broker_url))
        db_url = stack.enter_context(temp_database(settings.database_url))
        from sqlalchemy.engine import make_url

        from embedclf.store.db import make_engine

        engine = make_engine(db_url, pool_size=1, max_overflow=1)
        stack.callback(engine.dispose)

        train = load_labeled(TRAIN_CSV)
        embedder = load(params.spec)
        try:
            model_id = embedder.model_id
            store_head(engine, embedder, train.texts, train.labels, quiet)
        finally:
            embedder.close()  # free the model before the worker loads its own
            del embedder
            gc.collect()

        token = secrets.token_urlsafe(24)
        env = subprocess_env({
            "EMBEDCLF_DATABASE_URL": db_url, "EMBEDCLF_BROKER_URL": redis_url, "EMBEDCLF_QUEUE": settings.queue,
            "EMBEDCLF_EMBEDDER": params.spec, "EMBEDCLF_MODEL_DIR": settings.model_dir,
            "EMBEDCLF_BATCH_MAX_SIZE": str(params.batch_size), "EMBEDCLF_BATCH_MAX_WAIT_MS": str(params.max_wait_ms),
            "EMBEDCLF_BATCH_MAX_TOKENS": str(settings.batch.max_tokens),
            "EMBEDCLF_HEAD_REFRESH_S": str(settings.head_refresh_s), "EMBEDCLF_LOG_LEVEL": settings.log_level,
            "EMBEDCLF_API_TOKEN": token,
        })
        if not quiet:
            print(f"starting a worker and embedclf serve, logs in {log_dir} ...", file=sys.stderr)
        worker = WorkerProc("bench-http", env, log_dir)
        stack.callback(worker.stop)
        server = ServerProc(env, log_dir, free_port())
        stack.callback(server.stop)
        wait_ready([worker], params.ready_timeout_s)
        server.wait_ready(params.ready_timeout_s)
        server.check_alive()

        texts = load_labeled(HOLDOUT_CSV).texts + train.texts
        if not quiet:
            print(f"{params.warmup} warm-up requests, then {params.n} at {params.rate:g}/s ...", file=sys.stderr)
        records = asyncio.run(_load(server.url, token, texts, params, 0))
        server.check_alive()
        worker.check_alive()
        rss = {"server_rss_mb": server.peak_rss_mb(), "worker_rss_mb": worker.peak_rss_mb()}
        figures = summarize(records, params)
        figures.update(row_figures(engine, [r["task_id"] for r in records if r["task_id"]], params.batch_size))
        figures.update({k: None if v is None else round(v, 1) for k, v in rss.items()})
        figures.update(n=params.n, warmup=params.warmup, embedder=model_id, embedder_spec=params.spec,
                       batch_max_size=params.batch_size, batch_max_wait_ms=params.max_wait_ms,
                       timeout_s=params.timeout_s, workers=1, database=make_url(db_url).database,
                       redis_db=int(urlsplit(redis_url).path.strip("/")))
    shutil.rmtree(log_dir, ignore_errors=True)  # kept when the run failed: error messages point at it
    return figures


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
