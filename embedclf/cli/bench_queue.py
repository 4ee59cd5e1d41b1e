"""``embedclf bench queue``: the message path against stock Celery, in one run (see bench/queue.py)."""

from __future__ import annotations

import click

from embedclf.cli.bench import json_option, sigterm_as_interrupt, worker_env_pairs
from embedclf.cli.common import echo_json
from embedclf.config import Settings


@click.command("queue")
@click.option("--n-single", default=20_000, show_default=True, type=click.IntRange(100),
              help="Single-text tasks our worker drains.")
@click.option("--n-multi", default=100_000, show_default=True, type=click.IntRange(100),
              help="Texts our worker drains as multi-text tasks.")
@click.option("--n-stock", default=3_000, show_default=True, type=click.IntRange(100),
              help="No-op tasks for stock send_task and the stock Celery worker.")
@click.option("--per-task", default=256, show_default=True, type=click.IntRange(2), help="Texts per multi-text task.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1),
              help="EMBEDCLF_BATCH_MAX_SIZE of our worker.")
@click.option("--head", "head", type=click.Choice(["linear", "mlp"]), default="linear", show_default=True,
              help="The benchmark head: one softmax layer (the message path alone), or the default MLP head.")
@click.option("--worker-env", "worker_env", multiple=True, metavar="EMBEDCLF_NAME=VALUE",
              help="A setting for our worker (repeatable), e.g. EMBEDCLF_GC_THRESHOLD=0: an A/B of a worker "
                   "setting against the same stock figures.")
@json_option
@click.pass_obj
def queue_bench(settings: Settings, n_single: int, n_multi: int, n_stock: int, per_task: int, batch_size: int,
                head: str, worker_env: tuple[str, ...], as_json: bool) -> None:
    """Queue throughput without a model (null:64): our worker and enqueue vs stock Celery, same run."""
    from embedclf.bench.machine import machine_info
    from embedclf.bench.queue import QUEUE_SETS, QueueParams, run_queue

    params = QueueParams(n_single=n_single, n_multi=n_multi, n_stock=n_stock, per_task=per_task,
                         batch_size=batch_size, head=head, worker_env=worker_env_pairs(worker_env, QUEUE_SETS))
    with sigterm_as_interrupt():
        report = run_queue(params, settings, quiet=as_json)
    report["machine"] = machine_info(report["embedder"])
    if as_json:
        echo_json(report)
        return
    click.echo(f"stock Celery: send_task {report['stock_send_task_per_s']:,.0f}/s; solo worker, no-op task "
               f"{report['stock_celery_tasks_per_s']:,.0f} tasks/s")
    click.echo(f"embedclf worker (null:64, {head} head, batch {batch_size}): single-text "
               f"{report['worker_tasks_per_s']:,.0f} tasks/s ({report['ratio_worker_vs_stock']}x stock); "
               f"multi-text ({per_task}/task) "
               f"{report['worker_texts_per_s_multi']:,.0f} texts/s ({report['ratio_worker_multi_vs_stock']}x)")
    click.echo(f"task events on (-E): {report['worker_tasks_per_s_events']:,.0f} tasks/s "
               f"({report['events_cost_ratio']:.2f}x the rate without)")
    click.echo(f"results stored (Redis result backend): {report['worker_tasks_per_s_results']:,.0f} tasks/s "
               f"({report['results_cost_ratio']:.2f}x the rate without)")
    click.echo(f"embedclf enqueue: {report['enqueue_texts_per_s']:,.0f} texts/s in multi-text tasks "
               f"({report['ratio_enqueue_vs_stock']}x stock send_task); one task per text "
               f"{report['enqueue_single_tasks_per_s']:,.0f}/s ({report['ratio_enqueue_single_vs_stock']}x)")
