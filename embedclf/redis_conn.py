"""redis-py clients for the broker URL (the one place that builds them).

``redis://`` and ``rediss://`` URLs (TLS parameters in the query string, as kombu reads them)
go to :meth:`redis.Redis.from_url`. Nothing connects until the first command.
"""

from __future__ import annotations

from typing import Any

#: seconds a command may take; blocking commands add their own timeout on top
SOCKET_TIMEOUT_S = 10.0


def redis_client(url: str, *, socket_timeout: float | None = SOCKET_TIMEOUT_S, **kwargs: Any) -> Any:
    import redis

    options: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": 5,
                               "health_check_interval": 30}
    options.update(kwargs)
    return redis.Redis.from_url(url, **options)
