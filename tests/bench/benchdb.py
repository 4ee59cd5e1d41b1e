"""What the bench tests share: the benchmarks' temporary databases that exist right now."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from tests.conftest import PG_SERVER


def bench_databases() -> set[str]:
    eng = create_engine(f"{PG_SERVER}/postgres")
    try:
        with eng.connect() as conn:
            return set(conn.execute(text("SELECT datname FROM pg_database WHERE datname LIKE 'embedclf_bench_%'"))
                       .scalars())
    finally:
        eng.dispose()
