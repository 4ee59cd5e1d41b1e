"""The worker role can do its job and nothing more."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

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
                              "ON CONFLICT (task_id, head_name) DO NOTHING"))
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar() == 1
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

    from embedclf.config import Settings
    from embedclf.embedders.fake import FakeEmbedder
    from embedclf.heads.checkpoint import HeadArtifact
    from embedclf.heads.mlp import HeadConfig, MLPHead
    from embedclf.payload import ClassifyRequest
    from embedclf.store import repository as repo
    from worker.batching import Pending, process_batch
    from worker.resources import WorkerResources

    worker, _ = roles
    head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
    repo.add_head_version(clean_db, "h", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
    url = make_url(pg_url).set(username=worker).render_as_string(hide_password=False)
    res = WorkerResources(Settings(database_url=url), embedder=FakeEmbedder(32))
    try:
        now = dt.datetime.now(dt.timezone.utc)
        assert process_batch([Pending(None, now, request=ClassifyRequest("r1", "h", "hello"))], res) == 1
    finally:
        res.close()
    assert repo.query_predictions(clean_db, task_ids=["r1"])[0]["status"] == "ok"
