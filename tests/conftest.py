"""Shared fixtures: a private Postgres database and Redis DB index per test run.

Each run creates ``embedclf_test_<pid>_<random>`` (migrated with Alembic) and
claims a free Redis DB index (1-15); both are removed/flushed at the end.
Server URLs: EMBEDCLF_TEST_PG (default postgresql+psycopg2://postgres@127.0.0.1:5432)
and EMBEDCLF_TEST_REDIS (default redis://127.0.0.1:6379).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

from embedclf.bench.procs import WorkerProc

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = os.environ.get("EMBEDCLF_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("EMBEDCLF_TEST_REDIS", "redis://127.0.0.1:6379")


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
        conn.execute(text("TRUNCATE predictions, head_events, heads, task_conflicts RESTART IDENTITY"))
    return engine


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A free Redis DB index (claimed with a key, flushed at the end): the benchmark's own helper."""
    from embedclf.bench import BenchError
    from embedclf.bench.infra import claim_redis_db

    try:
        with claim_redis_db(f"{REDIS_SERVER}/0") as url:
            yield url
    except BenchError as exc:
        pytest.fail(f"Redis is needed for these tests: {exc}")


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


def one_line_error(result, *fragments: str) -> None:
    """A CLI failure: non-zero exit and exactly one ``Error: ...`` line naming ``fragments``."""
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


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


class WorkerProcess(WorkerProc):
    """A real ``celery -A worker.app worker --pool solo`` subprocess (the benchmark's helper)."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(name, env, log_dir, extra_args=extra_args)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if not self.alive():
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.2)


@pytest.fixture
def start_worker(tmp_path):
    from tests.helpers import forget_workers

    started: list[WorkerProcess] = []
    brokers: set[str] = set()

    def start(env: dict[str, str], name: str = "w1", *extra_args: str) -> WorkerProcess:
        w = WorkerProcess(env, tmp_path, name, extra_args)
        started.append(w)
        brokers.add(env.get("EMBEDCLF_BROKER_URL", ""))
        return w

    yield start
    for w in started:
        w.stop()
    for url in brokers:  # a killed worker's records would meet the next test on this Redis DB
        forget_workers(url)
