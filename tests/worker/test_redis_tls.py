"""The whole path over TLS: a private redis-server that only speaks TLS (``--port 0 --tls-port``), a
self-signed CA made with the ``openssl`` CLI, and ``rediss://...?ssl_cert_reqs=required&ssl_ca_certs=...``
for the worker, the client, ``embedclf enqueue``, ``embedclf health`` and the attempt counter."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from urllib.parse import quote

import pytest
import redis
from click.testing import CliRunner

from embedclf.cli import cli
from embedclf.client import BrokerUnavailable, Client
from embedclf.config import Settings
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.store import repository as repo
from tests.conftest import settings_env
from tests.helpers import free_port, rows_by_key
from worker.inflight import Inflight

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def openssl(*args: str, cwd) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def make_ca_and_server_cert(d) -> None:
    """ca.pem/ca.key (a throw-away CA) and server.pem/server.key for 127.0.0.1, signed by it."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=embedclf test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)


@pytest.fixture
def tls_redis(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make the test certificates")
    certs = tmp_path / "certs"
    certs.mkdir()
    make_ca_and_server_cert(certs)
    port, password = free_port(), secrets.token_urlsafe(12)
    proc = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(certs / "server.pem"), "--tls-key-file", str(certs / "server.key"),
                             "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", "no",
                             "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = (f"rediss://:{password}@127.0.0.1:{port}/0?ssl_cert_reqs=required"
           f"&ssl_ca_certs={quote(str(certs / 'ca.pem'))}")
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            out = proc.stdout.read()
            if "TLS" in out or "tls" in out:
                pytest.skip(f"this redis-server was built without TLS support: {out.strip().splitlines()[-1]}")
            raise AssertionError(out)
        try:
            if redis.Redis.from_url(url, socket_connect_timeout=0.5).ping():
                break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield url, port, password, certs
    proc.terminate()
    proc.wait(timeout=10)


def test_worker_client_cli_and_health_over_tls(settings, clean_db, start_worker, tls_redis, tmp_path):
    url, port, password, certs = tls_redis
    # the server speaks TLS only, and the client really verifies its certificate
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, password=password, socket_connect_timeout=1, socket_timeout=1).ping()
    other = tmp_path / "other"
    other.mkdir()
    make_ca_and_server_cert(other)
    wrong_ca = url.replace(quote(str(certs / "ca.pem")), quote(str(other / "ca.pem")))
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis.Redis.from_url(wrong_ca, socket_connect_timeout=1).ping()

    # the in-flight records, through the client the worker builds from the broker URL
    from embedclf.redis_conn import redis_client

    probe = Inflight(redis_client(url), "tls-probe-queue")
    probe.register()
    assert probe.heartbeat() is True and probe.unregister() == 0
    probe.client.close()

    head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
    repo.add_head_version(clean_db, "tls", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
    secured = Settings(database_url=settings.database_url, broker_url=url, embedder="fake:32")
    worker = start_worker(settings_env(secured, EMBEDCLF_LOG_LEVEL="DEBUG"), name="w-tls")
    worker.wait_ready()

    client = Client(url, enqueue_retry_s=10)
    try:
        refs = client.classify_many("tls", [f"over tls {i}" for i in range(20)] + [""], per_task=1)
    finally:
        client.close()
    ids = [ref.task_id for ref in refs]
    data = tmp_path / "texts.csv"
    data.write_text("text\nfrom the cli\nagain from the cli\n")
    env = {"EMBEDCLF_DATABASE_URL": settings.database_url, "EMBEDCLF_BROKER_URL": url}
    r = CliRunner().invoke(cli, ["enqueue", "--head", "tls", "--file", str(data), "--quiet",
                                 "--ids-out", str(tmp_path / "ids.txt")], env=env)
    assert r.exit_code == 0, r.output + r.stderr
    ids += [line.split("\t")[0] for line in (tmp_path / "ids.txt").read_text().splitlines()]

    rows = rows_by_key(clean_db, ids)
    deadline = time.monotonic() + 90
    while len(rows) < 23 and time.monotonic() < deadline:
        time.sleep(0.3)
        rows = rows_by_key(clean_db, ids)
    assert len(rows) == 23  # 21 single-text tasks and the CLI's 2 texts in one task
    assert [r["status"] for r in rows.values()].count("ok") == 22
    assert rows[(ids[20], 0, "tls")]["status"] == "error"
    log = worker.log()
    # the worker received, marked and acked over TLS (a failure would log these warnings)
    assert "unavailable" not in log and "cannot mark" not in log
    assert "batch " in log and password not in log

    r = CliRunner().invoke(cli, ["health", "--json", "--timeout", "5"], env=env)
    report = json.loads(r.stdout)
    assert r.exit_code == 0 and report["healthy"], r.stdout
    assert report["broker"]["ok"] and any(name.startswith("w-tls@") for name in report["workers"]["alive"])
    bad = CliRunner().invoke(cli, ["health", "--json", "--no-workers-ok"],
                             env={**env, "EMBEDCLF_BROKER_URL": wrong_ca})
    assert bad.exit_code == 1 and not json.loads(bad.stdout)["broker"]["ok"]

    # a producer pointed at the wrong CA fails loudly instead of sending in the clear
    with pytest.raises(BrokerUnavailable, match="certificate verify failed"):
        Client(wrong_ca, enqueue_retry_s=1).classify_many("tls", ["never sent"])
