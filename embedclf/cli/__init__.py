"""The ``embedclf`` admin CLI: nouns with verbs (``heads train``, ``db upgrade``, ...)."""

from __future__ import annotations

import logging
import sys

import click

from embedclf.config import Settings


class AppError(click.ClickException):
    """A one-line error; exit code 1."""


def expected_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import SQLAlchemyError

    from embedclf.data import DataError
    from embedclf.embedders.spec import SpecError
    from embedclf.store.db import DatabaseUnavailable
    from embedclf.store.repository import HeadNotFound, HeadStateError

    return (DataError, SpecError, DatabaseUnavailable, HeadNotFound, HeadStateError, SQLAlchemyError,
            ValueError, FileNotFoundError, OSError)


def one_line(exc: BaseException, clean=lambda text: text) -> str:
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and getattr(exc.orig, "pgcode", None) == "42P01":  # undefined_table
        first = str(exc.orig).strip().splitlines()[0]
        text = f"the database has no embedclf schema yet ({first}): run `embedclf db upgrade`"
    elif isinstance(exc, DBAPIError) and exc.orig is not None:
        text = f"database error: {exc.orig}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(clean(text).split())[:500]


def _redact(ctx: click.Context, message: str) -> str:
    """An error line with no secret of the configured URLs (whole or a piece a parser quoted)."""
    import os

    from embedclf.config import redact

    s = ctx.obj
    urls = [s.database_url, s.broker_url] if isinstance(s, Settings) else []
    urls += [os.environ.get(f"EMBEDCLF_{k}_URL", "") for k in ("DATABASE", "BROKER")]
    return redact(message, *urls)


class Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            exc.message = _redact(ctx, exc.message)
            raise
        except (click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except expected_errors() as exc:
            raise AppError(one_line(exc, clean=lambda text: _redact(ctx, text))) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embedclf")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """embedclf: text classification with LLM embeddings and small heads."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        ctx.obj = Settings.from_env()
    except ValueError as exc:
        raise AppError(f"bad settings: {exc}") from None


def main() -> None:
    cli(prog_name="embedclf")


from embedclf.cli import db, evaluate, heads, queue, demo, health, bench, data, services, config_cmd, serve  # noqa: E402,F401,E501  (register commands)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
