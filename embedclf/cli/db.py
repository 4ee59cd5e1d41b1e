"""``embedclf db upgrade|downgrade|current`` and ``embedclf worker``."""

from __future__ import annotations

import os
import sys

import click

from embedclf.config import Settings, mask_url


def require_database(settings: Settings):
    """An engine on a reachable database, or a one-line error saying how to start Postgres."""
    from embedclf.store.db import DatabaseUnavailable, make_engine, ping

    engine = make_engine(settings.database_url)
    try:
        ping(engine)
    except DatabaseUnavailable as exc:
        engine.dispose()
        if "does not exist" in str(exc):  # the server answers; the database is not there yet
            raise DatabaseUnavailable(f"{exc}: create it with `embedclf db upgrade --create`") from None
        raise DatabaseUnavailable(
            f"{exc}. Start Postgres: `embedclf services up` (a private one), `docker compose up -d postgres`, or "
            f"`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`; or set EMBEDCLF_DATABASE_URL"
        ) from None
    return engine


@click.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command()
@click.argument("revision", default="head")
@click.option("--create", is_flag=True, help="Create the database first if it does not exist.")
@click.pass_obj
def upgrade(settings: Settings, revision: str, create: bool) -> None:
    """Migrate the database to REVISION (default: head)."""
    from embedclf.store import migrate
    from embedclf.store.db import create_database

    if create and create_database(settings.database_url):
        click.echo(f"created database {mask_url(settings.database_url)}")
    require_database(settings).dispose()
    migrate.upgrade(settings.database_url, revision)
    click.echo(f"database at revision {migrate.current(settings.database_url)}")


@db.command()
@click.argument("revision")
@click.pass_obj
def downgrade(settings: Settings, revision: str) -> None:
    """Migrate the database down to REVISION (e.g. base)."""
    from embedclf.store import migrate

    require_database(settings).dispose()
    migrate.downgrade(settings.database_url, revision)
    click.echo(f"database at revision {migrate.current(settings.database_url) or 'base'}")


@db.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def current(settings: Settings, as_json: bool) -> None:
    """Print the current schema revision (and whether it is the code's latest)."""
    import json

    from embedclf.store import migrate

    require_database(settings).dispose()
    rev = migrate.current(settings.database_url)
    if as_json:
        click.echo(json.dumps({"revision": rev, "head": migrate.head(), "at_head": rev == migrate.head()}))
    else:
        click.echo(rev or "base (no tables)")


@db.command()
@click.option("--worker", "worker_role", default="embedclf_worker", show_default=True,
              help="Role the workers log in as: read heads, insert predictions, read back their keys.")
@click.option("--admin", "admin_role", default="embedclf_admin", show_default=True,
              help="Role the admin CLI logs in as: read and write the data tables.")
@click.option("--worker-password", envvar="EMBEDCLF_WORKER_DB_PASSWORD", default=None,
              help="Set the worker role's password (or EMBEDCLF_WORKER_DB_PASSWORD).")
@click.option("--admin-password", envvar="EMBEDCLF_ADMIN_DB_PASSWORD", default=None,
              help="Set the admin role's password (or EMBEDCLF_ADMIN_DB_PASSWORD).")
@click.option("--feedback", "feedback_role", default=None,
              help="Also create this role for other apps: INSERT into feedback, nothing else.")
@click.option("--feedback-password", envvar="EMBEDCLF_FEEDBACK_DB_PASSWORD", default=None,
              help="Set the feedback role's password (or EMBEDCLF_FEEDBACK_DB_PASSWORD).")
@click.option("--deny-connect", "deny_connect", multiple=True, metavar="DB",
              help="Revoke CONNECT on this other database from PUBLIC and these roles (repeatable). "
                   "Every role that relied on PUBLIC's default loses it there.")
@click.option("--deny-connect-all-others", is_flag=True,
              help="--deny-connect for every other database of the server that accepts connections.")
@click.pass_obj
def roles(settings: Settings, worker_role: str, admin_role: str, worker_password: str | None,
          admin_password: str | None, feedback_role: str | None, feedback_password: str | None,
          deny_connect: tuple[str, ...], deny_connect_all_others: bool) -> None:
    """Create least-privilege login roles for workers and for the admin CLI (run as the owner)."""
    from sqlalchemy import text

    from embedclf.store.roles import ensure_roles

    engine = require_database(settings)
    try:
        others = list(deny_connect)
        if deny_connect_all_others:
            with engine.connect() as conn:
                others += conn.execute(text("SELECT datname FROM pg_database WHERE datallowconn "
                                            "AND datname <> current_database() ORDER BY datname")).scalars().all()
        problems = ensure_roles(engine, worker_role, admin_role, worker_password, admin_password, feedback_role,
                                feedback_password, deny_connect=dict.fromkeys(others))
    finally:
        engine.dispose()
    click.echo(f"roles ready: {worker_role} (read heads, insert predictions, read back their keys), {admin_role} "
               "(read/write data)" + (f", {feedback_role} (insert feedback)" if feedback_role else "")
               + (f"; CONNECT revoked from PUBLIC on {', '.join(dict.fromkeys(others))}" if others else ""))
    for p in problems:
        click.echo(f"warning: {p}", err=True)
    if problems:
        raise SystemExit(1)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--loglevel", default="INFO", show_default=True,
              help="Celery log level (DEBUG, INFO, WARNING, ERROR); other options go to `celery worker`.")
@click.option("--processes", type=click.IntRange(1, 64), default=None,
              help="Worker processes to run and supervise (default: EMBEDCLF_WORKER_PROCESSES, 1). One process is "
                   "capped by its GIL: with a small encoder on a GPU, try 2-4 (docs/workers.md).")
@click.pass_context
def worker(ctx: click.Context, loglevel: str, processes: int | None) -> None:
    """Run a worker (same as `celery -A worker.app worker --pool solo`); extra args go to celery."""
    settings: Settings = ctx.obj
    n = processes or settings.worker_processes
    args = ["--loglevel", loglevel, *ctx.args]
    if n == 1:
        os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "solo",
                                  *args])
    if settings.metrics_port and settings.metrics_port + n - 1 > 65535:
        raise click.ClickException(f"EMBEDCLF_METRICS_PORT {settings.metrics_port} + {n} processes passes 65535")
    import logging

    from worker.supervisor import log as supervisor_log
    from worker.supervisor import run_processes

    handler = logging.StreamHandler()  # the workers' own lines go to the same stderr, in Celery's format
    handler.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/supervisor] %(message)s"))
    supervisor_log.addHandler(handler)
    supervisor_log.setLevel(getattr(logging, loglevel.upper(), logging.INFO))
    supervisor_log.propagate = False
    raise SystemExit(run_processes(n, args, os.environ, metrics_port=settings.metrics_port,
                                   stop_timeout_s=settings.shutdown_timeout_s + 15))
