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
