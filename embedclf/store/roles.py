"""Least-privilege Postgres roles: what a worker may touch, and what the admin CLI may.

Worker: read ``heads`` (to load weights); INSERT into ``predictions`` and SELECT only the key columns
of its rows (``task_id``, ``item``, ``head_name``) and their ``fingerprint``: the write path
(``embedclf/store/results.py``) needs SELECT on ON CONFLICT's arbiter columns, on what RETURNING names,
and on ``fingerprint`` to tell a redelivery from a reused task id; nothing reads texts, labels or scores
back. INSERT into ``task_conflicts`` (where reused ids are recorded). ``LISTEN``/``NOTIFY`` need no
grant. No DDL, no UPDATE/DELETE, no other table, no TEMP tables in this database.
Admin (the CLI): read and write every table of the schema; DDL stays with the owner that runs
the migrations.
Feedback (optional, for other applications): INSERT ``task_id``, ``head_name``, ``label``, ``note`` into
``feedback`` and nothing else, not even reading it back; ``created_by`` (the role's name) and ``source``
come from the column defaults, so a row cannot claim another sender.

Database-wide defaults that would undo this are revoked from PUBLIC (every role): CREATE on schema
``public`` (Postgres <= 14 grants it), TEMPORARY on this database. CONNECT to *other* databases is
also PUBLIC's by default; ``deny_connect`` revokes it there (it affects every role that relied on it,
so it is opt-in; pg_hba.conf is the other place to say which database a role may reach).

Identifiers are quoted by the driver (``psycopg2.sql.Identifier``); passwords are sent as SCRAM
verifiers computed client-side, so the plain password never appears in a statement or a server log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from psycopg2 import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from embedclf.errors import ConfigError
from embedclf.store.db import transaction

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
WORKER_TABLE_GRANTS = {"heads": ("SELECT",), "predictions": ("INSERT",), "task_conflicts": ("INSERT",)}
#: columns of ``predictions`` the worker may read: ON CONFLICT's arbiter columns, what RETURNING names, and
#: the task fingerprint that tells a redelivery from a reused id
WORKER_SELECT_COLUMNS = {"predictions": ("task_id", "head_name", "item", "fingerprint")}
WORKER_SEQUENCES = ("predictions_id_seq", "task_conflicts_id_seq")
#: columns an application may set on feedback; created_by/source/created_at/id take their defaults
FEEDBACK_INSERT_COLUMNS = {"feedback": ("task_id", "head_name", "label", "note")}


def _check(name: str) -> str:
    if not _ROLE.match(name):
        raise ConfigError(f"role name {name!r} must match {_ROLE.pattern}")
    return name


def _run(conn: Connection, statement: sql.Composable) -> None:
    """Execute a statement composed with psycopg2.sql on the transaction's own DBAPI connection."""
    dbapi: Any = conn.connection.dbapi_connection  # psycopg2's connection: its cursor is a context manager
    with dbapi.cursor() as cur:
        cur.execute(statement)


def _ids(*names: str) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _existing_columns(conn: Connection, table: str, wanted: Iterable[str]) -> list[str]:
    have = set(conn.execute(text("SELECT column_name FROM information_schema.columns "
                                 "WHERE table_schema = 'public' AND table_name = :t"), {"t": table}).scalars())
    return [c for c in wanted if c in have]


def _login(conn: Connection, role: str, password: str | None) -> None:
    from psycopg2.extensions import encrypt_password

    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
    if not exists:
        _run(conn, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    if password is not None:
        verifier = encrypt_password(password, role, conn.connection.dbapi_connection)
        _run(conn, sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))


def _clean_slate(conn: Connection, role: str, db: str) -> None:
    r = sql.Identifier(role)
    _run(conn, sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db), r))
    _run(conn, sql.SQL("REVOKE CREATE, TEMPORARY ON DATABASE {} FROM {}").format(sql.Identifier(db), r))
    _run(conn, sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(r))
    _run(conn, sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(r))
    # table-level REVOKE also revokes column privileges: re-running leaves exactly what follows
    _run(conn, sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(r))
    _run(conn, sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(r))


def ensure_roles(engine: Engine, worker: str, admin: str, worker_password: str | None = None,
                 admin_password: str | None = None, feedback: str | None = None,
                 feedback_password: str | None = None, deny_connect: Iterable[str] = ()) -> list[str]:
    """Create (if missing) the login roles and grant them exactly their rights on this database.

    ``feedback`` names an optional third role for applications that only record feedback.
    ``deny_connect`` names other databases of the server whose CONNECT is revoked from PUBLIC, so that
    these roles cannot reach them. Returns problems found when verifying the result (e.g. a REVOKE the
    current user was not allowed to make: Postgres only warns); empty when every denial holds.
    """
    w, a = _check(worker), _check(admin)
    f = _check(feedback) if feedback is not None else None
    logins = [(w, worker_password), (a, admin_password)] + ([(f, feedback_password)] if f else [])
    ours = [w, a] + ([f] if f else [])
    with transaction(engine) as conn:
        db = conn.execute(text("SELECT current_database()")).scalar_one()
        for role, password in logins:
            _login(conn, role, password)
        # PUBLIC's defaults: CREATE on schema public (granted by Postgres <= 14), TEMP on this database
        _run(conn, sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        _run(conn, sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db)))
        for other in deny_connect:
            if other != db:
                _run(conn, sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC, {}").format(
                    sql.Identifier(other), _ids(*ours)))
        for role in ours:
            _clean_slate(conn, role, db)
        # the worker: read heads, insert rows, read back only the key columns of predictions
        for table, rights in WORKER_TABLE_GRANTS.items():
            if not _existing_columns(conn, table, ["id"]):
                continue  # a table of a later migration
            _run(conn, sql.SQL("GRANT {} ON {} TO {}").format(
                sql.SQL(", ").join(sql.SQL(x) for x in rights), sql.Identifier(table), sql.Identifier(w)))
        for table, wanted in WORKER_SELECT_COLUMNS.items():
            _run(conn, sql.SQL("GRANT SELECT ({}) ON {} TO {}").format(
                _ids(*_existing_columns(conn, table, wanted)), sql.Identifier(table), sql.Identifier(w)))
        for seq in WORKER_SEQUENCES:
            if conn.execute(text("SELECT to_regclass(:s)"), {"s": f"public.{seq}"}).scalar() is not None:
                _run(conn, sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.Identifier(seq), sql.Identifier(w)))
        # the admin CLI: data rights on every table and sequence
        _run(conn, sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(
            sql.Identifier(a)))
        _run(conn, sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(sql.Identifier(a)))
        if f is not None:  # other apps: insert feedback (not its sender or source), nothing else
            for table, cols in FEEDBACK_INSERT_COLUMNS.items():
                _run(conn, sql.SQL("GRANT INSERT ({}) ON {} TO {}").format(
                    _ids(*cols), sql.Identifier(table), sql.Identifier(f)))
            _run(conn, sql.SQL("GRANT USAGE ON SEQUENCE feedback_id_seq TO {}").format(sql.Identifier(f)))
        return _verify(conn, ours, db, list(deny_connect))


def _verify(conn: Connection, roles: list[str], db: str, deny_connect: list[str]) -> list[str]:
    """What Postgres did not revoke (a non-owner's REVOKE only warns)."""
    problems = []
    for role in roles:
        checks = [("CREATE on schema public", "SELECT has_schema_privilege(:r, 'public', 'CREATE')", {}),
                  (f"TEMPORARY on database {db}", "SELECT has_database_privilege(:r, :d, 'TEMPORARY')", {"d": db})]
        checks += [(f"CONNECT on database {other}", "SELECT has_database_privilege(:r, :d, 'CONNECT')", {"d": other})
                   for other in deny_connect if other != db]
        for what, query, params in checks:
            if conn.execute(text(query), {"r": role, **params}).scalar():
                problems.append(f"role {role} still has {what} (run `embedclf db roles` as its owner or a superuser)")
    return problems
