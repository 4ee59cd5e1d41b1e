"""Shared fixtures: a private Postgres database and Redis DB index per test run.

Each run creates ``embedclf_test_<pid>_<random>`` (migrated with Alembic) and
claims a free Redis DB index (1-15); both are removed/flushed at the end.
Server URLs: EMBEDCLF_TEST_PG (default postgresql+psycopg2://postgres@127.0.0.1:5432)
and EMBEDCLF_TEST_REDIS (default redis://127.0.0.1:6379).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = os.environ.get("EMBEDCLF_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("EMBEDCLF_TEST_REDIS", "redis://127.0.0.1:6379")
CLAIM_KEY = "embedclf:test-run-claim"


@pytest.fixture(scope="session")
def pg_url() -> str:
    from embedclf.store import migrate
    from embedclf.store.db import create_database, drop_database

    url = f"{PG_SERVER}/embedclf_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        create_database(url, exist_ok=False)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Postgres at {PG_SERVER} is needed for these tests: {exc}")
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="session")
def engine(pg_url: str):
    from embedclf.store.db import make_engine

    eng = make_engine(pg_url)
    yield eng
    eng.dispose()


@pytest.fixture
def clean_db(engine):
    """Empty tables before a test that needs a known state."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("TRUNCATE predictions, head_events, heads RESTART IDENTITY"))
    return engine


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    for index in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{index}")
        try:
            claimed = client.set(CLAIM_KEY, os.getpid(), nx=True, ex=6 * 3600)
        except redis.ConnectionError as exc:
            pytest.fail(f"Redis at {REDIS_SERVER} is needed for these tests: {exc}")
        if claimed and client.dbsize() == 1:
            try:
                yield f"{REDIS_SERVER}/{index}"
            finally:
                client.flushdb()
                client.close()
            return
        if claimed:
            client.delete(CLAIM_KEY)
        client.close()
    pytest.fail("no free Redis DB index (1-15) to run the tests in")


@pytest.fixture(scope="session")
def settings(pg_url: str, redis_url: str):
    from embedclf.config import Settings

    return Settings(database_url=pg_url, broker_url=redis_url, embedder="minilm")


@pytest.fixture(scope="session")
def minilm():
    from embedclf.embedders.spec import load_embedder

    emb = load_embedder("minilm")
    yield emb
    emb.close()


def settings_env(settings, **extra: str) -> dict[str, str]:
    """Environment for a subprocess that reads the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDCLF_")}
    env.update(
        EMBEDCLF_DATABASE_URL=settings.database_url,
        EMBEDCLF_BROKER_URL=settings.broker_url,
        EMBEDCLF_QUEUE=settings.queue,
        EMBEDCLF_EMBEDDER=settings.embedder,
        EMBEDCLF_HEAD_REFRESH_S=str(settings.head_refresh_s),
        EMBEDCLF_BATCH_MAX_SIZE=str(settings.batch.max_size),
        EMBEDCLF_BATCH_MAX_WAIT_MS=str(settings.batch.max_wait_ms),
        EMBEDCLF_MAX_TEXT_CHARS=str(settings.max_text_chars),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class WorkerProcess:
    """A real ``celery -A worker.app worker`` subprocess."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "solo",
             "--loglevel", "INFO", "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()[-3000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_worker(tmp_path):
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str = "w1") -> WorkerProcess:
        w = WorkerProcess(env, tmp_path / f"{name}.log", name)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
