"""``embedclf serve``: the HTTP API (FastAPI app of :mod:`embedclf.http.app`, served by uvicorn)."""

from __future__ import annotations

import ipaddress
import logging
import math

import click

from embedclf.cli.base import AppError
from embedclf.config import Settings

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (0.0.0.0 or :: to expose it; set EMBEDCLF_API_TOKEN then).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port to listen on.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]), help="Server log level.")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="One log line per request.")
@click.option("--shutdown-timeout", "shutdown_s", default=30.0, show_default=True, type=click.FloatRange(0),
              help="On SIGTERM, let requests in flight (waiting ones too) finish for this long, then close them.")
@click.pass_obj
def serve(settings: Settings, host: str, port: int, log_level: str, access_log: bool, shutdown_s: float) -> None:
    """Serve the HTTP API: POST /v1/classify, GET /v1/results/{id}, /v1/heads, /livez, /readyz, /docs."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise AppError(f"embedclf serve needs the http extra (missing: {exc.name}): "
                       "pip install 'embedclf[worker,http]'") from None
    from embedclf.http.app import create_app

    if not settings.api_token and not is_loopback(host):
        click.echo(f"warning: serving on {host} without EMBEDCLF_API_TOKEN: anyone who reaches the port can "
                   "classify and read results", err=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=access_log,
                server_header=False, date_header=True, timeout_graceful_shutdown=math.ceil(shutdown_s))
