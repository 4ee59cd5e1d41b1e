"""Engine factory and database helpers. Nothing connects at import time."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError

from embedclf.errors import (
    ConfigError,
    DatabaseUnavailable,  # noqa: F401  (re-exported: defined in errors.py)
)


def make_engine(url: str, **kwargs: object) -> Engine:
    """An engine with connection health checks; callers own its lifetime."""
    options: dict[str, object] = {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 5, "future": True}
    options.update(kwargs)
    return create_engine(url, **options)


def ping(engine: Engine) -> None:
    """Raise :class:`DatabaseUnavailable` with a helpful message if the server is down."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"cannot reach Postgres at {engine.url.render_as_string(hide_password=True)}: {reason}"
        ) from None


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """The one place that commits: ``with transaction(engine) as conn: ...``."""
    with engine.begin() as conn:
        yield conn


_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _admin_engine(url: str) -> tuple[Engine, str]:
    u = make_url(url)
    name = u.database or ""
    if not _DB_NAME.match(name):
        raise ConfigError(f"refusing unusual database name {name!r}")
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT", future=True)
    return admin, name


def create_database(url: str, exist_ok: bool = True) -> bool:
    """Create the database named in ``url``; returns True if it was created."""
    admin, name = _admin_engine(url)
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
            if exists:
                if not exist_ok:
                    raise ConfigError(f"database {name} already exists")
                return False
            conn.execute(text(f'CREATE DATABASE "{name}"'))
            return True
    finally:
        admin.dispose()


def drop_database(url: str) -> None:
    admin, name = _admin_engine(url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
