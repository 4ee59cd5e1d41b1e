"""The worker role can do its job and nothing more."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from embedclf.store.roles import ensure_roles

pytestmark = pytest.mark.postgres


@pytest.fixture
def roles(engine, pg_url):
    suffix = secrets.token_hex(3)
    worker, admin = f"t_worker_{suffix}", f"t_admin_{suffix}"
    ensure_roles(engine, worker, admin)
    ensure_roles(engine, worker, admin)  # idempotent
    yield worker, admin
    with engine.begin() as conn:
        for role in (worker, admin):
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))


def connect_as(pg_url: str, role: str):
    return create_engine(make_url(pg_url).set(username=role, password=None), future=True)


def test_worker_role_least_privilege(roles, pg_url, clean_db):
    worker, _ = roles
    eng = connect_as(pg_url, worker)
    try:
        with eng.begin() as conn:  # its job: read heads, write and read results
            assert conn.execute(text("SELECT count(*) FROM heads")).scalar() == 0
            conn.execute(text("INSERT INTO predictions (task_id, status, error) VALUES ('w1', 'error', 'x') "
                              "ON CONFLICT (task_id, item, head_name) DO NOTHING"))
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar() == 1
            assert conn.execute(text("SELECT task_id, head_name FROM predictions")).all() == [("w1", None)]
        for forbidden in ("DROP TABLE predictions", "ALTER TABLE predictions ADD COLUMN evil text",
                          "DELETE FROM predictions", "UPDATE predictions SET label = 'x'",
                          "INSERT INTO heads (name, version, embedder_id, dim, labels, config, weights) "
                          "VALUES ('x', 1, 'e', 1, '[]', '{}', '')",
                          "SELECT * FROM head_events", "TRUNCATE predictions", "CREATE TABLE evil (x int)",
                          # training data, feedback and the embedding cache are none of its business
                          "SELECT * FROM datasets", "SELECT * FROM examples", "SELECT * FROM feedback",
                          "SELECT * FROM embedding_cache",
                          "INSERT INTO feedback (task_id, head_name, label) VALUES ('w1', 'h', 'x')",
                          "INSERT INTO embedding_cache (embedder_id, text_sha256, dim, vector) "
                          "VALUES ('e', '\\x00', 0, '')"):
            with pytest.raises(ProgrammingError, match="permission denied|must be owner"):
                with eng.begin() as conn:
                    conn.execute(text(forbidden))
    finally:
        eng.dispose()


def test_admin_role_manages_data_not_schema(roles, pg_url, clean_db):
    _, admin = roles
    eng = connect_as(pg_url, admin)
    try:
        with eng.begin() as conn:
            conn.execute(text("INSERT INTO head_events (name, version, action) VALUES ('h', 1, 'activate')"))
            conn.execute(text("DELETE FROM head_events"))
        with pytest.raises(ProgrammingError, match="must be owner"):
            with eng.begin() as conn:
                conn.execute(text("DROP TABLE predictions"))
    finally:
        eng.dispose()


def test_feedback_role_only_inserts_feedback(engine, pg_url, clean_db):
    """Other apps record feedback through a role that can insert into `feedback` and do nothing else."""
    suffix = secrets.token_hex(3)
    worker, admin, fb = f"t_worker_{suffix}", f"t_admin_{suffix}", f"t_feedback_{suffix}"
    ensure_roles(engine, worker, admin, feedback=fb)
    eng = connect_as(pg_url, fb)
    try:
        with eng.begin() as conn:
            conn.execute(text("INSERT INTO feedback (task_id, head_name, label, note) VALUES (:t, 'h', 'y', 'n')"),
                         {"t": f"fb-{suffix}"})
        for forbidden in ("SELECT * FROM feedback", "SELECT * FROM predictions", "SELECT * FROM heads",
                          "SELECT * FROM examples", "UPDATE feedback SET label = 'z'", "DELETE FROM feedback",
                          "INSERT INTO predictions (task_id, status, error) VALUES ('x', 'error', 'x')"):
            with pytest.raises(ProgrammingError, match="permission denied"):
                with eng.begin() as conn:
                    conn.execute(text(forbidden))
        with engine.connect() as conn:  # the row names who sent it
            assert conn.execute(text("SELECT created_by FROM feedback WHERE task_id = :t"),
                                {"t": f"fb-{suffix}"}).scalar_one() == fb
    finally:
        eng.dispose()
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM feedback WHERE task_id = :t"), {"t": f"fb-{suffix}"})
            for role in (worker, admin, fb):
                conn.execute(text(f'DROP OWNED BY "{role}"'))
                conn.execute(text(f'DROP ROLE "{role}"'))


def test_bad_role_name_refused(engine):
    with pytest.raises(ValueError, match="role name"):
        ensure_roles(engine, 'evil"; DROP TABLE heads; --', "admin_ok")


def test_worker_runs_under_its_role(roles, pg_url, clean_db):
    """The worker's real path (head poll, head load, batch insert) needs nothing more."""
    import datetime as dt

    from embedclf.classify import classify_requests
    from embedclf.config import Settings
    from embedclf.embedders.fake import FakeEmbedder
    from embedclf.heads.checkpoint import HeadArtifact
    from embedclf.heads.mlp import HeadConfig, MLPHead
    from embedclf.payload import parse_request
    from embedclf.store import repository as repo
    from worker.resources import WorkerResources

    worker, _ = roles
    head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
    repo.add_head_version(clean_db, "h", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
    url = make_url(pg_url).set(username=worker).render_as_string(hide_password=False)
    res = WorkerResources(Settings(database_url=url), embedder=FakeEmbedder(32))
    now = dt.datetime.now(dt.timezone.utc)

    def write(task_id: str, kwargs: dict, fp: str) -> object:
        req = parse_request(task_id, (), kwargs, 1000, fingerprint=fp)
        rows = classify_requests([req], res.embedder, res.heads.snapshot(), broken=res.heads.broken)
        for row in rows:
            row.update(received_at=now, worker=res.hostname)
        return res.write_results(rows)

    try:
        assert write("r1", {"head": "h", "texts": ["hello", "there"]}, "aa" * 16).inserted == 2
        again = write("r1", {"head": "h", "texts": ["hello", "there"]}, "aa" * 16)  # a redelivery
        assert again.inserted == 0 and again.duplicates == 2 and again.conflicts == []
        reused = write("r1", {"head": "h", "text": "another task"}, "bb" * 16)  # a reused id: recorded
        assert reused.inserted == 0 and [c.task_id for c in reused.conflicts] == ["r1"]
    finally:
        res.close()
    assert [r["status"] for r in repo.query_predictions(clean_db, task_ids=["r1"], limit=None)] == ["ok", "ok"]
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM task_conflicts WHERE task_id = 'r1'")).scalar() == 1


# --- issue 14, point 6: each denial proved ------------------------------------------------------------

DENIED = "permission denied"


def drop_roles(engine, *roles: str) -> None:
    with engine.begin() as conn:
        for role in roles:
            if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar():
                conn.execute(text(f'DROP OWNED BY "{role}"'))
                conn.execute(text(f'DROP ROLE "{role}"'))


def denied(eng, statement: str, match: str = DENIED) -> None:
    with pytest.raises(ProgrammingError, match=match):
        with eng.begin() as conn:
            conn.execute(text(statement))


def test_worker_cannot_read_what_others_sent(roles, pg_url, clean_db):
    """Texts, labels, scores and errors of predictions are not readable by the worker role."""
    worker, _ = roles
    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO predictions (task_id, head_name, status, label, score, text) "
                          "VALUES ('other', 'h', 'ok', 'secret-label', 0.9, 'personal text')"))
    eng = connect_as(pg_url, worker)
    try:
        for column in ("text", "label", "score", "top3", "error", "request_id", "worker", "*"):
            denied(eng, f"SELECT {column} FROM predictions")
        denied(eng, "SELECT 1 FROM predictions WHERE text LIKE 'personal%'")  # no probing through WHERE
        denied(eng, "INSERT INTO predictions (task_id, status, error) VALUES ('w', 'error', 'x') RETURNING text")
    finally:
        eng.dispose()


def test_worker_cannot_create_temp_tables(roles, pg_url):
    worker, _ = roles
    eng = connect_as(pg_url, worker)
    try:
        denied(eng, "CREATE TEMP TABLE scratch (x int)")
    finally:
        eng.dispose()


def test_public_create_on_schema_public_is_revoked(engine, pg_url):
    """Postgres <= 14 lets every role CREATE in schema public; simulated here on 15 by granting it back."""
    with engine.begin() as conn:
        conn.execute(text("GRANT CREATE ON SCHEMA public TO PUBLIC"))
    suffix = secrets.token_hex(3)
    worker, admin = f"t_worker_{suffix}", f"t_admin_{suffix}"
    try:
        problems = ensure_roles(engine, worker, admin)
        for role in (worker, admin):
            eng = connect_as(pg_url, role)
            try:
                denied(eng, "CREATE TABLE public.evil (x int)")
                denied(eng, "CREATE FUNCTION public.evil() RETURNS int AS 'SELECT 1' LANGUAGE sql")
            finally:
                eng.dispose()
        assert problems == []
    finally:
        with engine.begin() as conn:
            conn.execute(text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
            for role in (worker, admin):
                conn.execute(text(f'DROP OWNED BY "{role}"'))
                conn.execute(text(f'DROP ROLE "{role}"'))


@pytest.fixture
def other_db(pg_url):
    """Another database on the same server, as an unrelated application's would be."""
    from embedclf.store.db import create_database, drop_database

    url = make_url(pg_url).set(database=f"embedclf_other_{secrets.token_hex(3)}")
    create_database(url.render_as_string(hide_password=False))
    yield url
    drop_database(url.render_as_string(hide_password=False))


def test_roles_cannot_connect_to_denied_databases(roles, engine, pg_url, other_db):
    worker, admin = roles
    probe = create_engine(other_db.set(username=worker), future=True)
    try:
        with probe.connect() as conn:  # PUBLIC's default: any role reaches any database
            assert conn.execute(text("SELECT 1")).scalar() == 1
        probe.dispose()
        assert ensure_roles(engine, worker, admin, deny_connect=[other_db.database]) == []
        for role in (worker, admin):
            eng = create_engine(other_db.set(username=role), future=True)
            with pytest.raises(OperationalError, match="permission denied for database"):
                with eng.connect():
                    pass
            eng.dispose()
        with connect_as(pg_url, worker).connect() as conn:  # its own database still works
            assert conn.execute(text("SELECT current_user")).scalar() == worker
    finally:
        probe.dispose()


def test_cli_denies_connect_to_every_other_database(settings, engine, other_db):
    from click.testing import CliRunner

    from embedclf.cli import cli

    suffix = secrets.token_hex(3)
    worker, admin = f"t_worker_{suffix}", f"t_admin_{suffix}"
    try:
        r = CliRunner().invoke(cli, ["db", "roles", "--worker", worker, "--admin", admin, "--deny-connect",
                                     other_db.database], env={"EMBEDCLF_DATABASE_URL": settings.database_url})
        assert r.exit_code == 0, r.output
        assert f"CONNECT revoked from PUBLIC on {other_db.database}" in r.stdout
        with engine.connect() as conn:
            assert not conn.execute(text("SELECT has_database_privilege(:r, :d, 'CONNECT')"),
                                    {"r": worker, "d": other_db.database}).scalar()
    finally:
        drop_roles(engine, worker, admin)


def test_feedback_role_cannot_choose_its_sender_or_source(engine, pg_url, clean_db):
    suffix = secrets.token_hex(3)
    worker, admin, fb = f"t_worker_{suffix}", f"t_admin_{suffix}", f"t_feedback_{suffix}"
    ensure_roles(engine, worker, admin, feedback=fb)
    eng = connect_as(pg_url, fb)
    try:
        denied(eng, "INSERT INTO feedback (task_id, head_name, label, created_by) VALUES ('t', 'h', 'y', 'admin')")
        denied(eng, "INSERT INTO feedback (task_id, head_name, label, source) VALUES ('t', 'h', 'y', 'operator')")
        denied(eng, "INSERT INTO feedback (task_id, head_name, label, created_at) VALUES ('t', 'h', 'y', now())")
        with eng.begin() as conn:
            conn.execute(text("INSERT INTO feedback (task_id, head_name, label) VALUES (:t, 'h', 'y')"),
                         {"t": f"fb2-{suffix}"})
        with engine.connect() as conn:
            row = conn.execute(text("SELECT created_by, source FROM feedback WHERE task_id = :t"),
                               {"t": f"fb2-{suffix}"}).one()
        assert tuple(row) == (fb, "app")
    finally:
        eng.dispose()
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM feedback WHERE task_id = :t"), {"t": f"fb2-{suffix}"})
            for role in (worker, admin, fb):
                conn.execute(text(f'DROP OWNED BY "{role}"'))
                conn.execute(text(f'DROP ROLE "{role}"'))


def test_worker_grants_are_exactly_these(roles, engine):
    worker, _ = roles
    with engine.connect() as conn:
        tables = set(conn.execute(text("SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                                       "WHERE grantee = :r"), {"r": worker}).all())
        query = text("SELECT table_name, column_name, privilege_type FROM "
                     "information_schema.column_privileges WHERE grantee = :r")
        columns = set(conn.execute(query, {"r": worker}).all())
    assert tables == {("heads", "SELECT"), ("predictions", "INSERT"), ("task_conflicts", "INSERT")}
    # a table-wide grant shows in column_privileges for every column: keep only predictions' SELECTs
    assert {(c, p) for t, c, p in columns if t == "predictions" and p == "SELECT"} == {
        ("task_id", "SELECT"), ("item", "SELECT"), ("head_name", "SELECT"), ("fingerprint", "SELECT")}


@pytest.fixture
def odd_db(pg_url):
    """A migrated database whose name needs quoting."""
    from psycopg2 import sql

    from embedclf.store import migrate

    name = f'embedclf_t "odd"-{secrets.token_hex(2)}'
    admin = create_engine(make_url(pg_url).set(database="postgres"), isolation_level="AUTOCOMMIT", future=True)

    def run(statement):
        with admin.connect() as conn:
            with conn.connection.dbapi_connection.cursor() as cur:
                cur.execute(statement)

    run(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(pg_url).set(database=name)
    try:
        migrate.upgrade(url.render_as_string(hide_password=False))
        eng = create_engine(url, future=True)
        yield eng
        eng.dispose()
    finally:
        run(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.dispose()


def test_roles_in_a_database_whose_name_needs_quoting(odd_db):
    """The database name goes through the driver's identifier quoting, not string formatting."""
    suffix = secrets.token_hex(3)
    worker, admin = f"t_worker_{suffix}", f"t_admin_{suffix}"
    try:
        assert ensure_roles(odd_db, worker, admin) == []
        eng = create_engine(odd_db.url.set(username=worker), future=True)
        try:
            from embedclf.store.results import write_results

            rows = [{"task_id": t, "item": i, "head_name": "h", "status": "error", "error": "x", "fingerprint": "cc"}
                    for t, i in (("a", 0), ("b", 1), ("a", 0))]
            result = write_results(eng, rows)  # the workers' write path, as the worker role
            assert sorted(result.inserted_keys) == [("a", 0, "h"), ("b", 1, "h")]
            with eng.begin() as conn:  # LISTEN/NOTIFY need no grant
                conn.execute(text("LISTEN embedclf_heads"))
                conn.execute(text("SELECT pg_notify('embedclf_heads', 'x')"))
            denied(eng, "SELECT text FROM predictions")
        finally:
            eng.dispose()
    finally:
        drop_roles(odd_db, worker, admin)


def test_passwords_never_reach_the_server_in_plain_text(engine, pg_url):
    """Passwords are sent as SCRAM verifiers: not in any statement (statement logs, pg_stat_statements)."""
    from psycopg2.extras import LoggingConnection

    sent: list[str] = []

    class Log:
        def write(self, msg):
            sent.append(msg if isinstance(msg, str) else msg.decode())

    class Logged(LoggingConnection):  # logs every statement as sent, bound values included
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.initialize(Log())

    eng = create_engine(pg_url, future=True, connect_args={"connection_factory": Logged})

    suffix = secrets.token_hex(3)
    worker, admin, password = f"t_worker_{suffix}", f"t_admin_{suffix}", f"pw-{secrets.token_hex(8)}"
    try:
        ensure_roles(eng, worker, admin, worker_password=password, admin_password=password)
        assert any("ALTER ROLE" in s for s in sent)
        assert not [s for s in sent if password in s]
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": worker}).scalar()
        assert stored.startswith("SCRAM-SHA-256$")
    finally:
        eng.dispose()
        drop_roles(engine, worker, admin)
