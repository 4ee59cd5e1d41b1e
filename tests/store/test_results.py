"""The write path: several batches committed in one statement keep one completed_at each."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import text

from embedclf.store.results import write_results

pytestmark = pytest.mark.postgres


def _rows(task: str, n: int) -> list[dict]:
    return [{"task_id": task, "item": i, "head_name": "h", "status": "ok", "label": "a", "score": 0.5,
             "top3": [{"label": "a", "score": 0.5}], "text": f"{task} {i}", "fingerprint": "ab" * 16}
            for i in range(n)]


#: a text with quotes, backslashes, tabs, line breaks, control characters, a line separator and emoji
TEXT = "line\nbreak\ttab\\ \r\n \\N \\u0000 \"q\" 'q' \x1b\x7f \u2028 😀 end\\"


def _stamps(engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT string_agg(DISTINCT task_id, ','), count(*) FROM predictions GROUP BY completed_at "
            "ORDER BY completed_at"))]


def test_batches_written_together_get_their_own_completed_at_in_order(clean_db):
    rows = _rows("t1", 3) + _rows("t2", 2) + _rows("t3", 4)
    result = write_results(clean_db, rows, sizes=[3, 2, 4])
    assert result.inserted == 9
    assert _stamps(clean_db) == [("t1", 3), ("t2", 2), ("t3", 4)]
    with clean_db.connect() as conn:
        spread = conn.execute(text("SELECT max(completed_at) - min(completed_at) FROM predictions")).scalar_one()
    assert spread.total_seconds() == pytest.approx(2e-6)  # one transaction: microseconds apart


def test_one_batch_gets_one_completed_at_and_sizes_must_add_up(clean_db):
    write_results(clean_db, _rows("solo", 5), sizes=[5])
    assert _stamps(clean_db) == [("solo", 5)]
    with pytest.raises(ValueError, match="add up to 3 rows, got 4"):
        write_results(clean_db, _rows("bad", 4), sizes=[1, 2])


def test_a_batch_mixing_new_redelivered_and_reused_tasks_reports_each_and_notifies_once(clean_db):
    """The common write only counts the rows it inserted; when some already existed it is rolled back and
    made again returning keys, so the figures are exact and nothing is written or announced twice."""
    write_results(clean_db, _rows("old", 2) + _rows("taken", 1))
    reuse = [{**r, "fingerprint": "cd" * 16} for r in _rows("taken", 2)]  # another task under a used id
    import select

    import psycopg2

    listener = psycopg2.connect(clean_db.url.render_as_string(hide_password=False).replace("+psycopg2", ""))
    try:
        listener.autocommit = True
        listener.cursor().execute("LISTEN embedclf_results")
        result = write_results(clean_db, _rows("new", 3) + _rows("old", 2) + reuse, sizes=[3, 2, 2])
        notes: list[str] = []
        while select.select([listener], [], [], 0.5)[0]:
            listener.poll()
            notes += [n.payload for n in listener.notifies]
            listener.notifies.clear()
    finally:
        listener.close()
    assert result.inserted == 3 and result.duplicates == 2
    assert result.inserted_keys == {("new", i, "h") for i in range(3)}
    assert [c.task_id for c in result.conflicts] == ["taken"]
    assert _stamps(clean_db)[-1] == ("new", 3)  # only the new task's rows were added
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM predictions")).scalar_one() == 6
        assert conn.execute(text("SELECT count(*) FROM task_conflicts WHERE task_id = 'taken'")).scalar_one() == 1
    # one announcement of the batch's task ids: the rolled-back first try sent none
    assert sorted(t for n in notes for t in n.split("\n")) == ["new", "old", "taken"]


def test_a_fresh_batch_is_one_counting_statement_and_a_redelivery_retries_returning_keys(clean_db):
    from sqlalchemy import event

    seen: list[str] = []

    def record(conn, cursor, statement, params, context, executemany):
        seen.append("count" if "SELECT count(*) FROM ins" in statement
                    else "keys" if "RETURNING task_id, item, head_name" in statement else "other")

    event.listen(clean_db, "before_cursor_execute", record)
    try:
        assert write_results(clean_db, _rows("fresh", 4)).inserted == 4
        assert seen == ["count"]
        seen.clear()
        again = write_results(clean_db, _rows("fresh", 4))
        assert again.inserted == 0 and again.duplicates == 4 and again.inserted_keys == set()
        assert seen[:2] == ["count", "keys"]
    finally:
        event.remove(clean_db, "before_cursor_execute", record)


def test_every_column_round_trips_exactly_and_a_missing_or_null_value_is_sql_null(clean_db):
    """The rows travel as JSON arrays read by position: each value must land in its own column, unchanged
    (floats to the last bit, timestamps to the microsecond, text with quotes, backslashes, tabs, line breaks,
    control characters and emoji), an empty string must stay one, and an absent or null value must be SQL
    NULL, not a JSON ``null`` in the jsonb columns."""
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    at = dt.datetime(2026, 12, 5, 3, 4, 5, 678901, tzinfo=tz)
    full = {"task_id": "t-full", "item": 7, "head_name": "h", "request_id": "\\N", "head_version": 3,
            "embedder_id": "st:x", "label": "é 😀 'q'", "score": 0.1 + 0.2, "top3": [{"label": "a", "score": 5e-324}],
            "labels": ["a\t\\", "b"], "status": "ok", "text": TEXT, "enqueued_at": at,
            "received_at": at.isoformat(), "worker": "", "abstained": True, "fingerprint": "0f" * 16}
    sparse = {"task_id": "t-sparse", "item": 0, "head_name": None, "status": "error", "error": "",
              "top3": None, "labels": None}
    assert write_results(clean_db, [full, sparse]).inserted == 2
    with clean_db.connect() as conn:
        got = {r.task_id: r for r in conn.execute(text(
            "SELECT *, encode(fingerprint, 'hex') AS fp, top3 IS NULL AS top3_null, labels IS NULL AS labels_null "
            "FROM predictions"))}
    f, s = got["t-full"], got["t-sparse"]
    assert (f.item, f.head_name, f.request_id, f.head_version, f.embedder_id, f.label) == (
        7, "h", "\\N", 3, "st:x", "é 😀 'q'")
    assert f.score == 0.1 + 0.2  # exact: 0.30000000000000004
    assert f.top3 == [{"label": "a", "score": 5e-324}] and f.labels == ["a\t\\", "b"]
    assert (f.status, f.error, f.text, f.worker, f.abstained, f.fp) == ("ok", None, TEXT, "", True, "0f" * 16)
    assert f.enqueued_at == at and f.received_at == at
    assert (s.head_name, s.request_id, s.head_version, s.label, s.score, s.text, s.enqueued_at, s.fp) == (None,) * 8
    assert s.top3_null and s.labels_null and s.error == "" and s.abstained is False


def test_a_multi_text_batch_goes_as_groups_and_every_row_keeps_its_own_and_its_groups_values(clean_db):
    """Rows of tasks with several rows each travel as groups (the values a task's rows for one head share, sent
    once) and rows naming their group: each row must land with its group's values, including a task whose
    rows for one head differ (an error row without a version) and two heads of one task."""
    from embedclf.store.results import insert_params

    at = dt.datetime(2026, 12, 5, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)

    def row(task: str, item: int, head: str, **extra) -> dict:
        return {"task_id": task, "item": item, "head_name": head, "status": "ok", "label": f"{task}/{head}",
                "score": item / 10, "top3": [{"label": "a", "score": item / 10}], "text": f"{task} {item} {TEXT}",
                "enqueued_at": at + dt.timedelta(seconds=len(task)), "received_at": at, "worker": f"w-{task}",
                "head_version": len(head), "embedder_id": "st:x", "fingerprint": task.encode().hex().ljust(32, "0"),
                **extra}

    rows = [row("multi", i, h) for h in ("h", "hh") for i in range(4)]
    rows[2] = {**rows[2], "status": "error", "error": "bad text", "label": None, "score": None, "top3": None,
               "head_version": None, "embedder_id": None}
    rows += [row("other", i, "h") for i in range(3)]
    params = insert_params(rows)
    assert params["grouped"] and len(json.loads(params["groups"])) == 4  # multi/h ok, multi/h error, multi/hh, other/h
    assert write_results(clean_db, rows, sizes=[8, 3]).inserted == 11
    with clean_db.connect() as conn:
        got = {(r.task_id, r.item, r.head_name): r for r in conn.execute(text(
            "SELECT *, encode(fingerprint, 'hex') AS fp FROM predictions"))}
    assert len(got) == 11
    for want in rows:
        r = got[(want["task_id"], want["item"], want["head_name"])]
        assert (r.status, r.error, r.label, r.score, r.top3, r.text) == (
            want["status"], want.get("error"), want["label"], want["score"], want["top3"], want["text"])
        assert (r.head_version, r.embedder_id, r.enqueued_at, r.received_at, r.worker, r.fp) == (
            want["head_version"], want["embedder_id"], want["enqueued_at"], want["received_at"], want["worker"],
            want["fingerprint"])
    assert _stamps(clean_db) == [("multi", 8), ("other", 3)]
    # a redelivery of the grouped batch writes nothing and reports its rows as duplicates
    again = write_results(clean_db, rows, sizes=[8, 3])
    assert (again.inserted, again.duplicates) == (0, 11)


def test_single_row_tasks_go_flat_and_a_row_the_database_refuses_fails_the_write_without_a_retry(clean_db):
    from sqlalchemy import event
    from sqlalchemy.exc import IntegrityError

    from embedclf.store.results import insert_params

    rows = [{**r, "task_id": f"t{i}"} for i, r in enumerate(_rows("x", 3))]
    assert not insert_params(rows)["grouped"] and "groups" not in insert_params(rows)
    statements: list[str] = []

    def record(conn, cursor, statement, params, context, executemany):
        statements.append(statement)

    bad = [*rows, {**rows[0], "task_id": "t-bad", "error": "an ok row with an error"}]  # breaks a CHECK constraint
    event.listen(clean_db, "before_cursor_execute", record)
    try:
        with pytest.raises(IntegrityError, match="status_consistent"):
            write_results(clean_db, bad)
        assert len(statements) == 1  # only a unique violation is written again
    finally:
        event.remove(clean_db, "before_cursor_execute", record)
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM predictions")).scalar_one() == 0  # nothing of the batch
    assert write_results(clean_db, rows).inserted == 3
