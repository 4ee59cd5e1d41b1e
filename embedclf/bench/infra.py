"""Throw-away infrastructure for ``bench e2e``: a private Postgres database and Redis DB index.

Both are context managers whose exit runs on errors and Ctrl-C too (KeyboardInterrupt
goes through ``finally``): the database is dropped, the Redis DB flushed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from embedclf.bench import BenchError
from embedclf.config import mask_url

DB_PREFIX = "embedclf_bench_"
#: a key of its own, so neither the test suite nor another bench run takes the same index
CLAIM_KEY = "embedclf:bench-claim"
CLAIM_TTL_S = 6 * 3600


def database_url_for(server_url: str, name: str) -> str:
    """``server_url`` (any database) pointed at database ``name``, password kept."""
    from sqlalchemy.engine import make_url

    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@contextmanager
def temp_database(server_url: str) -> Iterator[str]:
    """Create ``embedclf_bench_<pid>_<hex>`` on the server of ``server_url``, migrate it, yield its URL, drop it.

    The name carries the creating process's id: a database left by a killed run says whose it was, and
    runs in parallel (the test suite's processes) each find their own."""
    from sqlalchemy.exc import OperationalError

    from embedclf.store import migrate
    from embedclf.store.db import DatabaseUnavailable, create_database, drop_database

    url = database_url_for(server_url, f"{DB_PREFIX}{os.getpid()}_{secrets.token_hex(4)}")
    try:
        create_database(url, exist_ok=False)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"cannot reach Postgres at {mask_url(database_url_for(server_url, 'postgres'))}: {reason}. "
            "Start it (see README Quickstart) or set EMBEDCLF_DATABASE_URL"
        ) from None
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop_database(url)


def redis_url_for(broker_url: str, index: int) -> str:
    parts = urlsplit(broker_url)
    if parts.scheme not in ("redis", "rediss"):
        raise BenchError(f"bench e2e needs a redis:// broker, got {mask_url(broker_url)}")
    return urlunsplit(parts._replace(path=f"/{index}"))


@contextmanager
def claim_redis_db(broker_url: str) -> Iterator[str]:
    """Yield the URL of a free DB index (15 down to 1) on the broker's server; flush it at the end.

    A DB is free when our claim key is the only key in it (as tests/conftest.py does).
    """
    import redis

    for index in range(15, 0, -1):
        url = redis_url_for(broker_url, index)
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
        try:
            claimed = client.set(CLAIM_KEY, os.getpid(), nx=True, ex=CLAIM_TTL_S)
            free = bool(claimed) and client.dbsize() == 1
        except redis.RedisError as exc:
            client.close()
            raise BenchError(
                f"cannot reach Redis at {mask_url(redis_url_for(broker_url, 0))} ({' '.join(str(exc).split())[:200]}). "
                "Start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379` or set EMBEDCLF_BROKER_URL"
            ) from None
        if free:
            try:
                yield url
            finally:
                client.flushdb()
                client.close()
            return
        if claimed:
            client.delete(CLAIM_KEY)
        client.close()
    raise BenchError("no free Redis DB index (1-15) to run the benchmark in")
