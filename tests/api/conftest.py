"""The HTTP API under test: a real uvicorn server on a free port (in a thread), real Redis and Postgres."""

from __future__ import annotations

import secrets

import pytest

from tests.api.server import ApiServer
from tests.conftest import WorkerProcess, settings_env
from tests.helpers import tiny_head


@pytest.fixture(scope="module")
def active_heads(engine):
    """Empty tables, then active heads 'tiny' and 'other' (2 labels, for the fake:32 embedder)."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("TRUNCATE predictions, head_events, heads RESTART IDENTITY"))
    tiny_head(engine)
    tiny_head(engine, "other")
    return ["other", "tiny"]


@pytest.fixture(scope="module")
def http_worker(settings, active_heads, tmp_path_factory):
    """A real worker (fake:32 embedder) on the session's queue."""
    import redis

    redis.Redis.from_url(settings.broker_url).delete(settings.queue)
    w = WorkerProcess(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32", EMBEDCLF_BATCH_MAX_WAIT_MS="20"),
                      tmp_path_factory.mktemp("http-worker"), "w-http")
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def api(settings, http_worker):
    """The API in front of the worker."""
    with ApiServer(settings) as server:
        yield server


@pytest.fixture(scope="module")
def idle_api(settings, active_heads):
    """The API on a queue no worker reads: what a worker that is down looks like to a caller."""
    import redis

    s = settings.with_overrides(queue=f"http-nobody-{secrets.token_hex(3)}")
    r = redis.Redis.from_url(settings.broker_url)
    with ApiServer(s) as server:
        server.redis, server.queue = r, s.queue
        yield server
    r.delete(s.queue)
