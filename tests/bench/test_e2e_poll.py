"""``bench e2e``'s poll for a round's rows reads the primary key's index, however many rows earlier rounds left."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from embedclf.bench.e2e import INTERNAL_ERROR, POLL_ID_SPAN, POLL_SQL

pytestmark = pytest.mark.postgres

#: the poll before the upper bound: the planner guessed a third of the table for ``id > :a`` and scanned it all
UNBOUNDED = ("SELECT count(*), (SELECT error FROM predictions WHERE id > :a AND status = 'error' "
             "AND error LIKE :e LIMIT 1) FROM predictions WHERE id > :a")


def _plan(conn, sql: str, params: dict) -> str:
    return "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql), params))


def test_the_poll_reads_only_the_rounds_rows(engine):
    with engine.connect() as conn:
        # a session-private copy of the table (never analysed: as a benchmark's table between autovacuum runs),
        # 60,000 earlier rows and a round of 2,500 after them
        conn.execute(text("CREATE TEMP TABLE predictions (LIKE public.predictions INCLUDING ALL) ON COMMIT DROP"))
        conn.execute(text("INSERT INTO predictions (id, task_id, item, head_name, status, label) "
                          "SELECT g, 't' || g, 0, 'h', 'ok', 'x' FROM generate_series(1, 62500) AS g"))
        last = conn.execute(text("SELECT max(id) FROM predictions")).scalar_one() - 2500
        params = {"a": last, "e": INTERNAL_ERROR, "b": last + POLL_ID_SPAN * 2500}
        assert "Seq Scan" in _plan(conn, UNBOUNDED, params)  # what the benchmark's own poll used to cost
        plan = _plan(conn, POLL_SQL, params)
        assert "Seq Scan" not in plan and plan.count("Index Scan on predictions_pkey") == 2  # the temp copy's pk
        assert conn.execute(text(POLL_SQL), params).one() == (2500, None)
        conn.execute(text("UPDATE predictions SET status = 'error', label = NULL, error = :e WHERE id = :i"),
                     {"e": INTERNAL_ERROR.replace("%", "") + ": boom", "i": last + 7})
        assert conn.execute(text(POLL_SQL), params).one() == (2500, INTERNAL_ERROR.replace("%", "") + ": boom")
        conn.rollback()  # the copy goes with the transaction
