"""Least-privilege Postgres roles: what a worker may touch, and what the admin CLI may.

Worker: read ``heads`` (to load weights), insert and read ``predictions``. Nothing else: no DDL,
no UPDATE/DELETE, no other tables (``datasets``, ``examples``, ``feedback``, ``embedding_cache`` and
the audit tables included).
Admin (the CLI): read and write every table of the schema; DDL stays with the owner that runs
the migrations.
Feedback (optional, for other applications): INSERT into ``feedback`` and nothing else, not even
reading it back; ``created_by`` defaults to the role's name, so each row says who sent it.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import Engine

from embedclf.store.db import transaction

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
WORKER_GRANTS = {"heads": "SELECT", "predictions": "SELECT, INSERT"}
FEEDBACK_GRANTS = {"feedback": "INSERT"}


def _check(name: str) -> str:
    if not _ROLE.match(name):
        raise ValueError(f"role name {name!r} must match {_ROLE.pattern}")
    return f'"{name}"'


def ensure_roles(engine: Engine, worker: str, admin: str, worker_password: str | None = None,
                 admin_password: str | None = None, feedback: str | None = None,
                 feedback_password: str | None = None) -> None:
    """Create (if missing) the login roles and grant them exactly their rights on this database.

    ``feedback`` names an optional third role for applications that only record feedback.
    """
    w, a = _check(worker), _check(admin)
    f = _check(feedback) if feedback is not None else None
    logins = [(worker, worker_password), (admin, admin_password)]
    if feedback is not None:
        logins.append((feedback, feedback_password))
    with transaction(engine) as conn:
        db = conn.execute(text("SELECT current_database()")).scalar()
        for role, password in logins:
            exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
            if not exists:
                conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
            if password is not None:
                conn.execute(text(f'ALTER ROLE "{role}" PASSWORD :p'), {"p": password})
        conn.execute(text(f'GRANT CONNECT ON DATABASE "{db}" TO {w}, {a}'))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {w}, {a}"))
        # the worker: nothing but what it needs, on top of a clean slate
        conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {w}"))
        conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {w}"))
        for table, rights in WORKER_GRANTS.items():
            conn.execute(text(f"GRANT {rights} ON {table} TO {w}"))
        conn.execute(text(f"GRANT USAGE ON SEQUENCE predictions_id_seq TO {w}"))
        # the admin CLI: data rights on every table and sequence
        conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {a}"))
        conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {a}"))
        if f is not None:  # other apps: insert feedback, nothing else
            conn.execute(text(f'GRANT CONNECT ON DATABASE "{db}" TO {f}'))
            conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {f}"))
            conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {f}"))
            conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {f}"))
            for table, rights in FEEDBACK_GRANTS.items():
                conn.execute(text(f"GRANT {rights} ON {table} TO {f}"))
            conn.execute(text(f"GRANT USAGE ON SEQUENCE feedback_id_seq TO {f}"))
