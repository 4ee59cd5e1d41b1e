"""Migrations on a fresh database: up, down, up again; and they match tables.py."""

from __future__ import annotations

import os
import secrets

import pytest
from sqlalchemy import inspect

from embedclf.store import migrate
from embedclf.store.db import create_database, drop_database, make_engine
from embedclf.store.tables import metadata

pytestmark = pytest.mark.postgres
PG_SERVER = os.environ.get("EMBEDCLF_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")


@pytest.fixture
def fresh_url():
    url = f"{PG_SERVER}/embedclf_mig_{os.getpid()}_{secrets.token_hex(3)}"
    create_database(url, exist_ok=False)
    yield url
    drop_database(url)


def _tables(url: str) -> set[str]:
    eng = make_engine(url)
    try:
        return set(inspect(eng).get_table_names())
    finally:
        eng.dispose()


def test_upgrade_downgrade_upgrade(fresh_url):
    assert migrate.current(fresh_url) is None
    migrate.upgrade(fresh_url)
    assert migrate.current(fresh_url) == "0001"
    assert {"heads", "head_events", "predictions", "alembic_version"} <= _tables(fresh_url)
    migrate.downgrade(fresh_url, "base")
    assert migrate.current(fresh_url) is None
    assert _tables(fresh_url) == {"alembic_version"}
    migrate.upgrade(fresh_url)
    assert migrate.current(fresh_url) == "0001"


def test_migrations_match_table_definitions(fresh_url):
    """Autogenerate finds nothing to change: tables.py and migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    migrate.upgrade(fresh_url)
    eng = make_engine(fresh_url)
    try:
        with eng.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, metadata)
    finally:
        eng.dispose()
    assert diff == []
