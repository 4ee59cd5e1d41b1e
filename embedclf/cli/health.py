"""``embedclf health``: broker, database, workers, queue depth; exit 1 when unhealthy."""

from __future__ import annotations

import json

import click

from embedclf.cli import cli
from embedclf.config import Settings, mask_url


def check_database(settings: Settings) -> dict:
    from alembic.script import ScriptDirectory

    from embedclf.store import migrate
    from embedclf.store.db import DatabaseUnavailable, make_engine, ping

    engine = make_engine(settings.database_url)
    try:
        ping(engine)
    except DatabaseUnavailable as exc:
        return {"ok": False, "error": str(exc)}
    finally:
        engine.dispose()
    current = migrate.current(settings.database_url)
    head = ScriptDirectory.from_config(migrate.alembic_config(settings.database_url)).get_current_head()
    if current != head:
        return {"ok": False, "revision": current, "error": f"schema at {current or 'base'}, code expects {head}: "
                                                           "run `embedclf db upgrade`"}
    return {"ok": True, "revision": current}


def check_broker_and_workers(settings: Settings, timeout: float) -> tuple[dict, dict]:
    from celery import Celery

    app = Celery("embedclf-health", broker=settings.broker_url, set_as_current=False)
    app.conf.update(accept_content=["json"], broker_connection_retry_on_startup=False)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            depth = conn.default_channel.client.llen(settings.queue)
        replies = app.control.ping(timeout=timeout) or []
    except Exception as exc:  # noqa: BLE001 - any broker failure is "unhealthy"
        msg = " ".join(str(exc).split())[:200]
        return {"ok": False, "error": f"cannot reach {mask_url(settings.broker_url)}: {msg}"}, {"ok": False}
    finally:
        app.close()
    names = sorted(name for reply in replies for name in reply)
    workers = {"ok": bool(names), "alive": names}
    if not names:
        workers["error"] = f"no worker answered a ping within {timeout}s"
    return {"ok": True, "queue": settings.queue, "queue_depth": depth}, workers


@cli.command()
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for worker replies.")
@click.option("--no-workers-ok", is_flag=True, help="Healthy even when no worker answers.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def health(settings: Settings, timeout: float, no_workers_ok: bool, as_json: bool) -> None:
    """Check broker, database, workers and queue depth; exit 1 if anything is unhealthy."""
    broker, workers = check_broker_and_workers(settings, timeout)
    report = {"database": check_database(settings), "broker": broker, "workers": workers}
    healthy = report["database"]["ok"] and broker["ok"] and (workers["ok"] or no_workers_ok)
    report["healthy"] = healthy
    if as_json:
        click.echo(json.dumps(report, default=str, sort_keys=True))
    else:
        for name in ("database", "broker", "workers"):
            part = report[name]
            detail = part.get("error") or ", ".join(f"{k}={v}" for k, v in part.items() if k != "ok")
            click.echo(f"{name:<9} {'ok' if part['ok'] else 'FAIL'}  {detail}")
    if not healthy:
        raise SystemExit(1)
