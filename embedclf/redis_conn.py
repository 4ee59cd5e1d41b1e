"""redis-py clients for the broker URL (the one place that builds them).

- ``redis://`` and ``rediss://`` URLs (TLS parameters in the query string, as kombu reads them) go to
  :meth:`redis.Redis.from_url`.
- ``sentinel://`` URLs, as kombu writes them (``sentinel://[:password@]host:26379[/db];sentinel://host2:26379``,
  with the master's name in ``EMBEDCLF_BROKER_SENTINEL_MASTER``), give a client of the current primary:
  redis-py asks the sentinels for it and asks again after a failover.

Nothing connects until the first command.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from embedclf.errors import ConfigError

#: seconds a command may take; blocking commands add their own timeout on top
SOCKET_TIMEOUT_S = 10.0
DEFAULT_SENTINEL_MASTER = "mymaster"


def is_sentinel(url: str) -> bool:
    return url.strip().lower().startswith("sentinel://")


def sentinel_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, str | None, int]:
    """``([(host, port), ...], username, password, db)`` of a ``sentinel://`` URL list."""
    nodes: list[tuple[str, int]] = []
    username = password = None
    db = 0
    for part in url.split(";"):
        part = part.strip()
        if not part:
            continue
        u = urlsplit(part)
        if u.scheme.lower() != "sentinel":
            raise ConfigError("every URL of a sentinel list must start with sentinel://")
        nodes.append((u.hostname or "127.0.0.1", u.port or 26379))
        if u.password is not None:
            username, password = (unquote(u.username) if u.username else None), unquote(u.password)
        if u.path.strip("/"):
            db = int(u.path.strip("/"))
    if not nodes:
        raise ConfigError("no sentinel in the URL")
    return nodes, username, password, db


def redis_client(url: str, *, socket_timeout: float | None = SOCKET_TIMEOUT_S,
                 sentinel_master: str = DEFAULT_SENTINEL_MASTER, **kwargs: Any) -> Any:
    import redis

    options: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": 5,
                               "health_check_interval": 30}
    options.update(kwargs)
    if is_sentinel(url):
        from redis.sentinel import Sentinel

        nodes, username, password, db = sentinel_nodes(url)
        sentinel = Sentinel(nodes, socket_timeout=5, socket_connect_timeout=5)
        return sentinel.master_for(sentinel_master, db=db, username=username, password=password, **options)
    return redis.Redis.from_url(url, **options)
