"""Run the Alembic migrations in ``migrations/`` programmatically."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from embedclf.errors import InstallError


def _installed() -> Path | None:
    """Where a wheel install put the migrations (data files ``share/embedclf/migrations``)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("embedclf")
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.as_posix().endswith("share/embedclf/migrations/env.py"):
            return Path(str(dist.locate_file(f))).resolve().parent
    return None


def migrations_dir() -> Path:
    """The Alembic scripts: the source checkout's ``migrations/`` (editable installs), else the copy a
    wheel installed, else ``./migrations`` (a container whose WORKDIR holds them)."""
    for path in (Path(__file__).resolve().parents[2] / "migrations", _installed(), Path.cwd() / "migrations"):
        if path is not None and (path / "env.py").is_file():
            return path
    raise InstallError("the migrations are not installed: reinstall embedclf, or run from a checkout")


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision the code knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(migrations_dir())).get_current_head()
