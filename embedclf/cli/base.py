"""What every CLI module shares: the one-line error type and the root group's error handling."""

from __future__ import annotations

import click

from embedclf.config import Settings


class AppError(click.ClickException):
    """A one-line error; exit code 1."""


def expected_errors() -> tuple[type[BaseException], ...]:
    """What the CLI prints as one ``Error:`` line: the project's own errors and database errors.

    Anything else (a bare ``ValueError``, ``KeyError``...) is a bug and keeps its traceback.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from embedclf.errors import EmbedclfError

    return (EmbedclfError, SQLAlchemyError)


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
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            exc.message = _redact(ctx, exc.message)  # type: ignore[misc]  # click declares it Final
            raise
        except (click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except expected_errors() as exc:
            raise AppError(one_line(exc, clean=lambda text: _redact(ctx, text))) from None
        except OSError as exc:
            if exc.filename is None or isinstance(exc, ConnectionError):
                raise  # not about a path the user gave: a bug or an unexpected failure, keep the traceback
            # a file or directory named on the command line that cannot be read or written
            raise AppError(f"{exc.filename}: {exc.strerror or exc}") from None
