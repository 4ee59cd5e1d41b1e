"""`embedclf health` against real Redis, Postgres and a real worker."""

from __future__ import annotations

import json
import os
import secrets

import pytest
from click.testing import CliRunner

from embedclf.cli import cli
from embedclf.store.db import create_database, drop_database
from tests.conftest import settings_env

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
PG_SERVER = os.environ.get("EMBEDCLF_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")


def health(settings, *args: str, **env: str):
    base = {"EMBEDCLF_DATABASE_URL": settings.database_url, "EMBEDCLF_BROKER_URL": settings.broker_url}
    base.update(env)
    return CliRunner().invoke(cli, ["health", "--timeout", "1", *args], env=base, catch_exceptions=False)


def test_unhealthy_without_workers(settings):
    r = health(settings, "--json")
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert report["database"]["ok"] and report["broker"]["ok"] and not report["workers"]["ok"]
    assert isinstance(report["broker"]["queue_depth"], int)
    assert health(settings, "--no-workers-ok").exit_code == 0


def test_database_problems_are_unhealthy(settings):
    r = health(settings, "--no-workers-ok", EMBEDCLF_DATABASE_URL="postgresql+psycopg2://postgres@127.0.0.1:1/x")
    assert r.exit_code == 1 and "database  FAIL  cannot reach Postgres" in r.stdout
    url = f"{PG_SERVER}/embedclf_health_{secrets.token_hex(3)}"
    create_database(url)
    try:
        r = health(settings, "--no-workers-ok", EMBEDCLF_DATABASE_URL=url)
        assert r.exit_code == 1 and "run `embedclf db upgrade`" in r.stdout
    finally:
        drop_database(url)


def test_broker_down_is_unhealthy(settings):
    r = health(settings, "--json", EMBEDCLF_BROKER_URL="redis://127.0.0.1:1/0")
    assert r.exit_code == 1 and "cannot reach" in json.loads(r.stdout)["broker"]["error"]


@pytest.mark.slow
def test_healthy_with_a_worker(settings, start_worker):
    worker = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32"), name="w-health")
    worker.wait_ready()
    r = health(settings, "--json", "--timeout", "3")
    report = json.loads(r.stdout)
    assert r.exit_code == 0 and report["healthy"], report
    assert any(name.startswith("w-health@") for name in report["workers"]["alive"])


# --- liveness and readiness (exec probes) ------------------------------------------------------------

DEAD_PG = "postgresql+psycopg2://postgres@127.0.0.1:1/nothing"
DEAD_REDIS = "redis://127.0.0.1:1/0"


def add_head(engine, name: str, weights: bytes | None = None) -> None:
    from sqlalchemy import text

    from embedclf.heads.checkpoint import HeadArtifact
    from embedclf.heads.mlp import HeadConfig, MLPHead
    from embedclf.store import repository as repo

    head = MLPHead(HeadConfig(input_dim=8, num_labels=2, hidden_dim=4))
    version = repo.add_head_version(engine, name, HeadArtifact.from_head(head, ["x", "y"], "fake:8"))
    if weights is not None:  # what a truncated upload or a newer format leaves behind
        with engine.begin() as conn:
            conn.execute(text("UPDATE heads SET weights = :w WHERE name = :n AND version = :v"),
                         {"w": weights, "n": name, "v": version})


def test_live_is_the_broker_only(settings):
    """A worker waiting out a Postgres outage is alive: --live does not look at the database."""
    r = health(settings, "--live", EMBEDCLF_DATABASE_URL=DEAD_PG)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("broker    ok")
    assert "database" not in r.stdout


def test_live_fails_without_the_broker(settings):
    r = health(settings, "--live", "--json", EMBEDCLF_BROKER_URL=DEAD_REDIS)
    report = json.loads(r.stdout)
    assert r.exit_code == 1 and not report["healthy"] and report["mode"] == "live"
    assert "cannot reach redis://127.0.0.1:1/0" in report["broker"]["error"]


def test_live_with_a_worker_name_needs_its_ping(settings):
    r = health(settings, "--live", "--json", "--worker", "nobody@nowhere", "--timeout", "0.5")
    report = json.loads(r.stdout)
    assert r.exit_code == 1 and report["broker"]["ok"] and not report["workers"]["ok"]
    assert "nobody@nowhere did not answer" in report["workers"]["error"]
    assert health(settings, "--worker", "x@y").exit_code == 2  # --worker only goes with --live


def test_ready_needs_an_active_head_that_loads(settings, clean_db):
    r = health(settings, "--ready", "--json", EMBEDCLF_BROKER_URL=DEAD_REDIS)  # the broker is not its business
    report = json.loads(r.stdout)
    assert r.exit_code == 1 and report["database"]["ok"] and not report["heads"]["ok"]
    assert "no active head loads" in report["heads"]["error"]
    add_head(clean_db, "broken", weights=b"not safetensors")
    report = json.loads(health(settings, "--ready", "--json").stdout)
    assert not report["healthy"] and list(report["heads"]["broken"]) == ["broken v1"]
    add_head(clean_db, "good")
    r = health(settings, "--ready", "--json", EMBEDCLF_BROKER_URL=DEAD_REDIS)
    report = json.loads(r.stdout)
    assert r.exit_code == 0 and report["healthy"], report
    assert report["heads"]["loaded"] == ["good v1"] and "broken v1" in report["heads"]["broken"]
    r = health(settings, "--ready")  # text form, one line per part
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("database  ok")


def test_ready_fails_on_database_problems(settings):
    r = health(settings, "--ready", EMBEDCLF_DATABASE_URL=DEAD_PG)
    assert r.exit_code == 1 and "database  FAIL  cannot reach Postgres" in r.stdout
    url = f"{PG_SERVER}/embedclf_health_{secrets.token_hex(3)}"
    create_database(url)
    try:
        r = health(settings, "--ready", EMBEDCLF_DATABASE_URL=url)
        assert r.exit_code == 1 and "run `embedclf db upgrade`" in r.stdout
    finally:
        drop_database(url)


def test_live_and_ready_together(settings, clean_db):
    add_head(clean_db, "good")
    report = json.loads(health(settings, "--live", "--ready", "--json").stdout)
    assert report["healthy"] and report["mode"] == "live+ready"
    assert set(report) >= {"broker", "database", "heads"}
    r = health(settings, "--live", "--ready", EMBEDCLF_BROKER_URL=DEAD_REDIS)
    assert r.exit_code == 1
