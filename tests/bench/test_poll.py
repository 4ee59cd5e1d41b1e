"""``bench e2e``'s wait for a round's rows: its poll reads the primary key's index, however many rows earlier
rounds left; it waits for the round's own rows only and stops at a failed batch."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from embedclf.bench.poll import INTERNAL_ERROR, POLL_ID_SPAN, POLL_SQL

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


def test_wait_rows_waits_for_the_rows_after_the_mark_only(clean_db):
    """A round waits for its own rows: the rows of earlier rounds, a failed batch among them included, sit at or
    below the mark taken before the round and are neither counted nor read."""
    from embedclf.bench import BenchError
    from embedclf.bench.poll import last_row_id, wait_rows

    class Producer:
        def check(self) -> None:
            pass

    def insert(rows: list[tuple[str, str, str | None, str | None]]) -> None:
        with clean_db.begin() as conn:
            for task_id, status, label, error in rows:
                conn.execute(text("INSERT INTO predictions (task_id, status, label, error) VALUES (:t, :s, :l, :e)"),
                             {"t": task_id, "s": status, "l": label, "e": error})

    assert last_row_id(clean_db) == 0
    insert([("old-1", "ok", "a", None), ("old-2", "ok", "a", None),
            ("old-3", "error", None, INTERNAL_ERROR.rstrip("%") + " TypeError")])
    mark = last_row_id(clean_db)
    with clean_db.connect() as conn:
        assert mark == conn.execute(text("SELECT max(id) FROM predictions")).scalar_one()
    with pytest.raises(BenchError, match="only 0 of 2 rows"):  # the old rows do not count, the old failure is not read
        wait_rows(clean_db, 2, [], Producer(), timeout=0.3, quiet=True, after_id=mark)
    insert([("new-1", "ok", "a", None), ("new-2", "ok", "a", None)])
    wait_rows(clean_db, 2, [], Producer(), timeout=10, quiet=True, after_id=mark)
    assert last_row_id(clean_db) == mark + 2


def test_wait_rows_stops_at_a_failed_batch(clean_db):
    """A batch that failed for a bug leaves one error row per message, never one per text: waiting for
    every text's row would last the whole timeout, so the wait stops at once with the worker's error."""
    import time

    from embedclf.bench import BenchError
    from embedclf.bench.poll import wait_rows
    from worker.pipeline import internal_error_rows  # what a worker writes for such a batch

    class Producer:
        def check(self) -> None:
            pass

    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO predictions (task_id, status, label) VALUES ('ok-1', 'ok', 'a')"))
    with pytest.raises(BenchError, match="only 1 of 10 rows"):  # no failure: it waits out its timeout
        wait_rows(clean_db, 10, [], Producer(), timeout=0.3, quiet=True)

    class Msg:
        task_id, fingerprint = "t-1", None

    row = internal_error_rows([Msg()], TypeError("'NoneType' object is not iterable"))[0]
    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO predictions (task_id, status, error) VALUES (:t, 'error', :e)"),
                     {"t": row["task_id"], "e": row["error"]})
    t0 = time.monotonic()
    with pytest.raises(BenchError, match="a worker failed a batch: internal error while classifying: TypeError"):
        wait_rows(clean_db, 10, [], Producer(), timeout=60, quiet=True)
    assert time.monotonic() - t0 < 5


def test_poll_delay_polls_a_round_a_few_times_and_often_near_its_end():
    """Each poll costs the database CPU that the measured workers share: a round is polled rarely while most of its
    rows are missing, every POLL_MIN_S near its end, never more than POLL_MAX_S apart."""
    from embedclf.bench.poll import POLL_MAX_S, POLL_MIN_S, poll_delay

    assert poll_delay(0, 5000, 0.0) == poll_delay(0, 5000, 3.0) == POLL_MIN_S  # no rate yet
    assert poll_delay(250, 5000, 0.5) == POLL_MAX_S  # 9.5 s to go at this rate
    assert poll_delay(2500, 5000, 2.5) == 1.25  # half the time left
    assert poll_delay(4990, 5000, 5.0) == POLL_MIN_S
    # a 5,000-row round written at 1,000 rows/s after a 0.3 s start: polled 8 times (every POLL_MIN_S: 21)
    t, polls, done = 0.0, 0, 0
    while done < 5000:
        done = max(0, min(5000, int(1000 * (t - 0.3))))
        polls += 1
        t += poll_delay(done, 5000, t)
    assert polls <= 9 and t - 5.3 <= 2 * POLL_MIN_S
