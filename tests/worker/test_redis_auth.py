"""A password-protected Redis: workers and producers authenticate; the password is never logged."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time

import pytest
from click.testing import CliRunner

from embedclf.cli import cli
from embedclf.config import Settings
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.store import repository as repo
from tests.conftest import settings_env
from tests.helpers import free_port, produce, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def private_redis(tmp_path):
    port, password = free_port(), secrets.token_urlsafe(16)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, password
    proc.terminate()
    proc.wait(timeout=10)


def test_password_protected_broker(settings, clean_db, start_worker, private_redis, tmp_path):
    port, password = private_redis
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
    repo.add_head_version(clean_db, "auth", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
    secured = Settings(database_url=settings.database_url, broker_url=url, embedder="fake:32")
    worker = start_worker(settings_env(secured), name="w-auth")
    worker.wait_ready()
    produce(url, [{"id": "auth-1", "kwargs": {"head": "auth", "text": "hello"}}], tmp_path)
    row = wait_rows(clean_db, ["auth-1"], worker, timeout=60)["auth-1"]
    assert row["status"] == "ok"
    # a wrong password is refused with a clear, masked message
    r = CliRunner().invoke(cli, ["health", "--json", "--timeout", "3"],
                           env={"EMBEDCLF_DATABASE_URL": settings.database_url, "EMBEDCLF_BROKER_URL": url})
    assert r.exit_code == 0, r.stdout
    bad = CliRunner().invoke(cli, ["health", "--json", "--no-workers-ok"],
                             env={"EMBEDCLF_DATABASE_URL": settings.database_url,
                                  "EMBEDCLF_BROKER_URL": f"redis://:wrong-{password}@127.0.0.1:{port}/0"})
    assert bad.exit_code == 1 and password not in bad.stdout
    assert "***" in json.loads(bad.stdout)["broker"]["error"]
    assert password not in worker.log()  # Celery prints the broker URL masked
    assert all(password not in str(v) for v in row.values())
