"""Alembic environment: the URL comes from the caller or from EMBEDCLF_DATABASE_URL."""

from alembic import context
from sqlalchemy import create_engine, pool

from embedclf.config import Settings
from embedclf.store.tables import metadata

config = context.config
url = (config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
       or Settings.from_env().database_url)


def run_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=metadata, compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
