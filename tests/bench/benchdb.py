"""What the bench tests share: running ``embedclf bench`` in-process, checks of its figures, and the benchmarks'
temporary databases that exist right now."""

from __future__ import annotations

import math
import os

from click.testing import CliRunner
from sqlalchemy import create_engine, text

from embedclf.cli import cli
from tests.conftest import PG_SERVER, REDIS_SERVER

ENV = {
    # the bench makes its own database and Redis DB index on these servers
    "EMBEDCLF_DATABASE_URL": f"{PG_SERVER}/postgres",
    "EMBEDCLF_BROKER_URL": f"{REDIS_SERVER}/0",
    "EMBEDCLF_EMBEDDER": "fake:64",
}


def run(*args: str, ok: bool = True, env: dict | None = None):
    result = CliRunner().invoke(cli, ["bench", *args], env={**ENV, **(env or {})}, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def check_machine(m: dict, model_id: str) -> None:
    assert m["cpu_count"] >= 1 and m["python"] and m["torch"] and m["embedder"] == model_id
    assert {"cpu_model", "gpu", "llama_cpp", "sentence_transformers"} <= set(m)


def bench_databases() -> set[str]:
    """The bench databases this process made that exist now (the suite's other processes run benchmarks too)."""
    eng = create_engine(f"{PG_SERVER}/postgres")
    try:
        with eng.connect() as conn:
            return set(conn.execute(text("SELECT datname FROM pg_database WHERE starts_with(datname, :p)"),
                                    {"p": f"embedclf_bench_{os.getpid()}_"}).scalars())
    finally:
        eng.dispose()
