"""Durability defaults (issue 14, point 8): the broker-persistence warning, and the start commands we suggest.

The warning is checked against real ``redis-server`` processes started here on free ports, each in its
own temporary directory: without persistence, with the append-only file, with RDB snapshots only, and
with CONFIG disabled (``rename-command``), as managed Redis services do.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis

from embedclf.checks import START_REDIS_LOCAL, broker_persistence_warning, check_services
from embedclf.config import Settings
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def redis_server(tmp_path):
    """``start(*args)`` runs a private redis-server with these extra arguments; returns a client."""
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> redis.Redis:
        port = free_port()
        workdir = tmp_path / f"r{port}"
        workdir.mkdir()
        procs.append(subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir",
                                       str(workdir), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return client
            except redis.ConnectionError as exc:
                if time.monotonic() > deadline or procs[-1].poll() is not None:
                    raise AssertionError(f"redis-server {args} did not start") from exc
                time.sleep(0.05)

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def test_warns_when_the_broker_persists_nothing(redis_server):
    warning = broker_persistence_warning(redis_server("--save", "", "--appendonly", "no"))
    assert warning is not None
    assert "persists nothing" in warning and "appendonly yes" in warning


def test_quiet_with_the_append_only_file(redis_server):
    assert broker_persistence_warning(redis_server("--save", "", "--appendonly", "yes")) is None


def test_quiet_with_rdb_snapshots(redis_server):
    """RDB alone counts as persistence (it loses what came after the last snapshot: README, Operations)."""
    assert broker_persistence_warning(redis_server("--save", "60 1", "--appendonly", "no")) is None


def test_config_disabled_falls_back_to_info(redis_server):
    bare = redis_server("--save", "", "--appendonly", "no", "--rename-command", "CONFIG", "")
    with pytest.raises(redis.ResponseError):  # what the fallback is for
        bare.config_get("appendonly")
    warning = broker_persistence_warning(bare)
    assert warning is not None and "aof_enabled:0" in warning and "CONFIG GET" in warning
    aof = redis_server("--save", "", "--appendonly", "yes", "--rename-command", "CONFIG", "")
    assert broker_persistence_warning(aof) is None


def test_decoded_responses_work_too(redis_server):
    plain = redis_server("--save", "", "--appendonly", "no")
    decoded = redis.Redis(port=plain.connection_pool.connection_kwargs["port"], decode_responses=True)
    assert broker_persistence_warning(decoded) == broker_persistence_warning(plain)


def test_never_raises_when_nothing_answers():
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    warning = broker_persistence_warning(dead)
    assert warning is not None and warning.startswith("cannot tell whether the broker persists its queue")


def test_suggested_start_commands_keep_the_queue():
    """README, `make services` and `embedclf enqueue` used to suggest `--save "" --appendonly no`."""
    from embedclf.cli.queue import START_REDIS

    assert "--appendonly yes" in START_REDIS_LOCAL and "--appendonly yes" in START_REDIS
    problems = check_services(Settings(database_url="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
                                       broker_url=f"redis://127.0.0.1:{free_port()}/0"))
    redis_problem = [p for p in problems if "cannot reach Redis" in p]
    assert len(redis_problem) == 1 and START_REDIS_LOCAL in redis_problem[0]
    readme = (ROOT / "README.md").read_text()
    assert "--appendonly no" not in readme
    assert "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --appendonly yes" in readme


def test_make_install_builds_the_default_embedders_onnx_files():
    """`make install` runs `checks onnx`, which builds the ONNX files of ONNX_SPECS: the default must be one of them.

    (A missing file is rebuilt offline on load: tests/embedders/test_onnx.py; a fresh install's demo and worker
    run on the default: tests/cli/test_services.py.)
    """
    from embedclf.checks import ONNX_SPECS
    from embedclf.embedders.spec import parse_spec

    default = Settings().embedder
    assert parse_spec(default).kind != "onnx" or default.partition("?")[0] in ONNX_SPECS, default
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/python -m embedclf.checks onnx" in makefile.split("\ninstall:", 1)[1].split("\n\n", 1)[0]
