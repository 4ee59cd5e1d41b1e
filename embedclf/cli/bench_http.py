"""``embedclf bench http``: the HTTP API's throughput and latency at a fixed rate (see bench/http.py)."""

from __future__ import annotations

import click

from embedclf.cli.base import AppError
from embedclf.cli.bench import _spec, json_option, sigterm_as_interrupt
from embedclf.cli.common import echo_json, embedder_option, load_embedder_verbose
from embedclf.config import Settings


@click.command("http")
@click.option("-n", "n", default=300, show_default=True, type=click.IntRange(1), help="Measured requests.")
@click.option("--rate", default=20.0, show_default=True, type=click.FloatRange(0.1, 10_000),
              help="Requests per second, sent on a fixed schedule (open loop).")
@embedder_option
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1),
              help="EMBEDCLF_BATCH_MAX_SIZE of the worker.")
@click.option("--max-wait-ms", default=50, show_default=True, type=click.IntRange(0),
              help="EMBEDCLF_BATCH_MAX_WAIT_MS of the worker.")
@click.option("--timeout", "timeout_s", default=60.0, show_default=True, type=click.FloatRange(1, 300),
              help="timeout_s of each request.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(0), help="Unmeasured requests first.")
@json_option
@click.pass_obj
def http_bench(settings: Settings, n: int, rate: float, embedder_spec: str | None, batch_size: int,
               max_wait_ms: int, timeout_s: float, warmup: int, as_json: bool) -> None:
    """HTTP API: POST /v1/classify with one text and wait: true at a fixed rate; throughput, p50/p99 latency."""
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise AppError(f"bench http needs the http and dev extras (missing: {exc.name}): "
                         "pip install 'embedclf[worker,http,dev]'") from None
    from embedclf.bench.http import HttpParams, run_http
    from embedclf.bench.machine import machine_info

    spec = _spec(settings, embedder_spec)
    params = HttpParams(spec=spec, n=n, rate=rate, batch_size=batch_size, max_wait_ms=max_wait_ms,
                        timeout_s=timeout_s, warmup=warmup)
    with sigterm_as_interrupt():
        report = run_http(params, settings, lambda s: load_embedder_verbose(settings, s, quiet=as_json), quiet=as_json)
    report["mode"] = "http"
    report["machine"] = machine_info(report["embedder"])
    if as_json:
        echo_json(report)
    else:
        print_report(report)
    if report["ok"] != report["requests"]:
        raise AppError(f"{report['requests'] - report['ok']} of {report['requests']} requests failed "
                         f"({report['statuses']}; first: {report['first_error']})")


def print_report(r: dict) -> None:
    echo = click.echo
    echo(f"HTTP API, POST /v1/classify with one text and wait: true; embedder {r['embedder']}, 1 worker "
         f"(batch {r['batch_max_size']} / {r['batch_max_wait_ms']} ms)")
    echo(f"{r['requests']} requests offered at {r['offered_rate']:g}/s (after {r['warmup']} warm-up): {r['ok']} ok "
         f"{r['statuses']}; throughput {r['throughput_per_s']:.1f} requests/s over {r['seconds']:.1f} s")
    if r["ok"]:
        echo(f"latency (scheduled send -> answer): p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
             f"p99 {r['p99_ms']:.0f} ms, max {r['latency_max_ms']:.0f} ms")
    if "server_wait_p50_ms" in r:
        echo(f"in the server (p50 / p99): body {r['server_parse_p50_ms']:.1f} / {r['server_parse_p99_ms']:.1f} ms, "
             f"heads check + enqueue {r['server_enqueue_p50_ms']:.1f} / {r['server_enqueue_p99_ms']:.1f} ms, "
             f"wait for the rows {r['server_wait_p50_ms']:.0f} / {r['server_wait_p99_ms']:.0f} ms")
    if r.get("rows"):
        bs = r["batch_sizes"]
        echo(f"of which queue + worker (rows' enqueued_at -> completed_at): p50 {r['queue_p50_ms']:.0f} ms, "
             f"p99 {r['queue_p99_ms']:.0f} ms; {bs['batches']} batches of {bs['mean']} texts on average")
    echo(f"peak RSS: server {r['server_rss_mb']} MB, worker {r['worker_rss_mb']} MB; load generator lagged its "
         f"schedule by at most {r['send_lag_max_ms']:.0f} ms")
