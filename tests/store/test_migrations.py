"""Migrations on a fresh database: up, down, up again; and they match tables.py."""

from __future__ import annotations

import os
import secrets

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

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


NEW_IN_0002 = {"datasets", "examples", "feedback", "embedding_cache"}


def test_upgrade_downgrade_upgrade(fresh_url):
    assert migrate.current(fresh_url) is None
    migrate.upgrade(fresh_url)
    assert migrate.current(fresh_url) == "0004"
    assert {"heads", "head_events", "predictions", "alembic_version",
            "task_conflicts"} | NEW_IN_0002 <= _tables(fresh_url)
    migrate.downgrade(fresh_url, "0003")
    assert migrate.current(fresh_url) == "0003"
    migrate.downgrade(fresh_url, "0002")
    assert "task_conflicts" not in _tables(fresh_url)
    migrate.downgrade(fresh_url, "0001")
    assert migrate.current(fresh_url) == "0001"
    assert not NEW_IN_0002 & _tables(fresh_url)
    migrate.downgrade(fresh_url, "base")
    assert migrate.current(fresh_url) is None
    assert _tables(fresh_url) == {"alembic_version"}
    migrate.upgrade(fresh_url)
    assert migrate.current(fresh_url) == "0004"


def _exec(url: str, *stmts: str) -> list:
    eng = make_engine(url)
    try:
        with eng.begin() as conn:
            return [conn.execute(text(s)).all() if s.lstrip().upper().startswith("SELECT") else conn.execute(text(s))
                    for s in stmts]
    finally:
        eng.dispose()


def test_0002_predictions_rows_per_task_and_head(fresh_url):
    migrate.upgrade(fresh_url, "0002")
    ins = "INSERT INTO predictions (task_id, head_name, status, label, error, abstained) VALUES "
    _exec(fresh_url,
          ins + "('t1', 'intent', 'ok', 'a', NULL, false), ('t1', 'urgency', 'ok', 'high', NULL, false)",
          ins + "('t2', 'intent', 'ok', NULL, NULL, true)",  # abstained: ok without a label
          ins + "('t3', NULL, 'error', NULL, 'bad', false)")
    with pytest.raises(IntegrityError):  # same task and head twice
        _exec(fresh_url, ins + "('t1', 'intent', 'ok', 'b', NULL, false)")
    with pytest.raises(IntegrityError):  # NULLS NOT DISTINCT: a headless error row is unique per task too
        _exec(fresh_url, ins + "('t3', NULL, 'error', NULL, 'again', false)")
    for bad in ("('t4', 'intent', 'ok', NULL, NULL, false)",  # ok needs a label or abstention
                "('t5', 'intent', 'error', NULL, 'x', true)"):  # errors never abstain
        with pytest.raises(IntegrityError):
            _exec(fresh_url, ins + bad)
    _exec(fresh_url, ins + "('t6', 'intent', 'ok', NULL, NULL, true)")
    # downgrade keeps one row per task and turns abstentions into error rows the old check accepts
    migrate.downgrade(fresh_url, "0001")
    (rows,) = _exec(fresh_url, "SELECT task_id, status, error FROM predictions ORDER BY task_id")
    assert [r[0] for r in rows] == ["t1", "t2", "t3", "t6"]
    assert {r[0]: r[1] for r in rows}["t2"] == "error" and "abstained" in {r[0]: r[2] for r in rows}["t2"]
    migrate.upgrade(fresh_url, "0002")
    assert migrate.current(fresh_url) == "0002"


def test_0003_rows_per_task_text_and_head_and_existing_rows_kept(fresh_url):
    migrate.upgrade(fresh_url, "0002")
    _exec(fresh_url, "INSERT INTO predictions (task_id, head_name, status, label) VALUES ('old', 'h', 'ok', 'a')")
    migrate.upgrade(fresh_url)
    (rows,) = _exec(fresh_url, "SELECT task_id, item, labels, fingerprint FROM predictions")
    assert [tuple(r) for r in rows] == [("old", 0, None, None)]  # an existing row is item 0 of its task
    ins = "INSERT INTO predictions (task_id, item, head_name, status, label, error) VALUES "
    _exec(fresh_url, ins + "('m', 0, 'h', 'ok', 'a', NULL), ('m', 1, 'h', 'ok', 'b', NULL), "
                           "('m', NULL, NULL, 'error', NULL, 'whole task')")
    for dup in ("('m', 1, 'h', 'ok', 'c', NULL)", "('m', NULL, NULL, 'error', NULL, 'again')"):
        with pytest.raises(IntegrityError):  # (task, item, head) is unique, NULLs not distinct
            _exec(fresh_url, ins + dup)
    with pytest.raises(IntegrityError):
        _exec(fresh_url, ins + "('m', -1, 'h', 'ok', 'a', NULL)")
    # the workers' write path targets the new unique index
    from embedclf.store.repository import write_predictions
    eng = make_engine(fresh_url)
    try:
        assert write_predictions(eng, [{"task_id": "m", "item": 2, "head_name": "h", "status": "ok", "label": "x"},
                                       {"task_id": "m", "item": 0, "head_name": "h", "status": "ok",
                                        "label": "y"}]) == 1
    finally:
        eng.dispose()
    migrate.downgrade(fresh_url, "0002")  # one row per (task, head) again: the first of each kept
    (rows,) = _exec(fresh_url, "SELECT task_id, head_name, label FROM predictions ORDER BY id")
    assert [tuple(r) for r in rows] == [("old", "h", "a"), ("m", "h", "a"), ("m", None, None)]
    migrate.upgrade(fresh_url)


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


def test_0004_request_id_index_holds_only_rows_with_a_request_id_and_lookups_use_it(fresh_url):
    migrate.upgrade(fresh_url)
    (defn,) = _exec(fresh_url, "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_predictions_request_id'")
    assert "WHERE (request_id IS NOT NULL)" in defn[0][0]
    eng = make_engine(fresh_url)
    try:
        with eng.begin() as conn:
            conn.execute(text("SET LOCAL enable_seqscan = off"))  # an empty table: make the planner show its index
            plan = conn.execute(text("EXPLAIN SELECT * FROM predictions WHERE request_id = 'r1'")).all()
    finally:
        eng.dispose()
    assert "ix_predictions_request_id" in " ".join(r[0] for r in plan)
    migrate.downgrade(fresh_url, "0003")
    (defn,) = _exec(fresh_url, "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_predictions_request_id'")
    assert "WHERE" not in defn[0][0]
    migrate.upgrade(fresh_url)
