"""``embedclf health``: broker, database, workers and queue depth; exit 1 when unhealthy.

Two narrower modes serve as orchestrator exec probes (exit 0 ok, 1 not):

- ``--live``: the broker answers (and, with ``--worker NAME``, that worker answers a ping). A worker
  waiting out a database outage is alive: restarting it would not help.
- ``--ready``: Postgres answers, its schema is at the code's head, and at least one active head
  loads (config parsed, weights deserialized): the worker can write rows.

Every line printed passes through :func:`embedclf.config.redact`: no password of the configured URLs,
whole or in pieces, reaches the output, even inside a driver's or URL parser's error text.
"""

from __future__ import annotations

import math

import click

from embedclf.config import Settings, mask_url, redact


def _one_line(exc: BaseException, settings: Settings) -> str:
    """The error on one line, secrets of the configured URLs redacted before it is cut to length."""
    from sqlalchemy.exc import DBAPIError

    text = str(exc.orig) if isinstance(exc, DBAPIError) and exc.orig is not None else str(exc)
    text = redact(text or type(exc).__name__, settings.database_url, settings.broker_url)
    return " ".join(text.split())[:300]


def _engine(settings: Settings, timeout: float):
    from embedclf.store.db import make_engine

    return make_engine(settings.database_url, pool_size=1, max_overflow=0,
                       connect_args={"connect_timeout": max(2, math.ceil(timeout))})


def check_database(settings: Settings, timeout: float = 2.0) -> dict:
    """Postgres answers and its schema is at the migration head."""
    from alembic.script import ScriptDirectory

    from embedclf.store import migrate
    from embedclf.store.db import DatabaseUnavailable, ping

    try:
        engine = _engine(settings, timeout)
        try:
            ping(engine)
        finally:
            engine.dispose()
        current = migrate.current(settings.database_url)
        head = ScriptDirectory.from_config(migrate.alembic_config(settings.database_url)).get_current_head()
    except DatabaseUnavailable as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a probe reports, it does not crash
        return {"ok": False,
                "error": f"cannot check Postgres at {mask_url(settings.database_url)}: {_one_line(exc, settings)}"}
    if current != head:
        return {"ok": False, "revision": current, "error": f"schema at {current or 'base'}, code expects {head}: "
                                                           "run `embedclf db upgrade`"}
    return {"ok": True, "revision": current}


def check_heads(settings: Settings, timeout: float = 2.0) -> dict:
    """At least one active head loads as the worker would load it (config parsed, weights deserialized)."""
    from embedclf.store import repository

    loaded, broken = [], {}
    try:
        engine = _engine(settings, timeout)
        try:
            for name, version in sorted(repository.active_versions(engine).items()):
                try:
                    _, artifact = repository.load_head(engine, name, version)
                    artifact.build()
                    loaded.append(f"{name} v{version}")
                except Exception as exc:  # noqa: BLE001 - one broken head is reported, the others still count
                    broken[f"{name} v{version}"] = _one_line(exc, settings)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": f"cannot read heads: {_one_line(exc, settings)}"}
    out: dict = {"ok": bool(loaded), "loaded": loaded}
    if broken:
        out["broken"] = broken
    if not loaded:
        out["error"] = "no active head loads" + ("" if broken else " (none is active: `embedclf heads activate`)")
    return out


def _celery(settings: Settings):
    from celery import Celery

    app = Celery("embedclf-health", broker=settings.broker_url, set_as_current=False)
    app.conf.update(accept_content=["json"], broker_connection_retry_on_startup=False,
                    broker_transport_options=settings.broker_transport_options())
    return app


def check_broker(app, settings: Settings, timeout: float) -> dict:
    """The broker accepts a connection; reports the queue depth."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0.2, timeout=timeout)
            depth = conn.default_channel.client.llen(settings.queue)
    except Exception as exc:  # noqa: BLE001 - any broker failure is "unhealthy"
        return {"ok": False, "error": f"cannot reach {mask_url(settings.broker_url)}: {_one_line(exc, settings)}"}
    return {"ok": True, "queue": settings.queue, "queue_depth": depth}


def check_workers(app, settings: Settings, timeout: float, worker: str | None = None) -> dict:
    """Workers answering a Celery ping (only ``worker`` when given)."""
    try:
        replies = app.control.ping(destination=[worker] if worker else None, timeout=timeout) or []
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": f"ping failed: {_one_line(exc, settings)}"}
    names = sorted(name for reply in replies for name in reply)
    out: dict = {"ok": bool(names), "alive": names}
    if not names:
        out["error"] = (f"worker {worker} did not answer a ping within {timeout}s" if worker
                        else f"no worker answered a ping within {timeout}s")
    return out


def check_broker_and_workers(settings: Settings, timeout: float) -> tuple[dict, dict]:
    app = _celery(settings)
    try:
        broker = check_broker(app, settings, timeout)
        workers = check_workers(app, settings, timeout) if broker["ok"] else {"ok": False}
    finally:
        app.close()
    return broker, workers


def _report(settings: Settings, timeout: float, no_workers_ok: bool, live: bool, ready: bool,
            worker: str | None) -> tuple[dict, bool]:
    if not (live or ready):  # the full check
        broker, workers = check_broker_and_workers(settings, timeout)
        full = {"database": check_database(settings, timeout), "broker": broker, "workers": workers}
        return full, full["database"]["ok"] and broker["ok"] and (workers["ok"] or no_workers_ok)
    report: dict = {}
    if live:
        app = _celery(settings)
        try:
            report["broker"] = check_broker(app, settings, timeout)
            if worker:
                report["workers"] = (check_workers(app, settings, timeout, worker) if report["broker"]["ok"]
                                     else {"ok": False})
        finally:
            app.close()
    if ready:
        report["database"] = check_database(settings, timeout)
        report["heads"] = (check_heads(settings, timeout) if report["database"]["ok"]
                           else {"ok": False, "error": "not checked: the database is not ready"})
    return report, all(part["ok"] for part in report.values())


@click.command()
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for the broker, Postgres, workers.")
@click.option("--no-workers-ok", is_flag=True, help="Healthy even when no worker answers.")
@click.option("--live", is_flag=True, help="Liveness only: the broker answers (and --worker, if given).")
@click.option("--ready", is_flag=True, help="Readiness only: Postgres answers, schema at head, an active head loads.")
@click.option("--worker", "worker", default=None, metavar="NAME@HOST",
              help="With --live: this worker must also answer a ping.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the same checks, 'healthy' too).")
@click.pass_obj
def health(settings: Settings, timeout: float, no_workers_ok: bool, live: bool, ready: bool, worker: str | None,
           as_json: bool) -> None:
    """Check broker, database, workers and queue depth; exit 1 if anything is unhealthy.

    --live and --ready check less, for orchestrator probes (exit 0/1); both may be given."""
    if worker and not live:
        raise click.UsageError("--worker goes with --live")
    report, healthy = _report(settings, timeout, no_workers_ok, live, ready, worker)
    report["healthy"] = healthy
    if live or ready:
        report["mode"] = "+".join(m for m, on in (("live", live), ("ready", ready)) if on)
    if as_json:
        from embedclf.cli.common import to_json

        out = to_json(report)
    else:
        lines = []
        for name, part in report.items():
            if not isinstance(part, dict):
                continue
            detail = part.get("error") or ", ".join(f"{k}={v}" for k, v in part.items() if k != "ok")
            lines.append(f"{name:<9} {'ok' if part['ok'] else 'FAIL'}  {detail}")
        out = "\n".join(lines)
    click.echo(redact(out, settings.database_url, settings.broker_url))
    if not healthy:
        raise SystemExit(1)
