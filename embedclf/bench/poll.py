"""``bench e2e``'s wait for a round's rows: Postgres polled until every text of the round has its row.

A round's rows are those above the largest row id before it (:func:`last_row_id`). Polls are few
(:func:`poll_delay`): they share the host with the workers being measured.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from embedclf.bench import BenchError
from embedclf.bench.procs import Producer, WorkerProc
from embedclf.progress import bar as progress_bar

#: a round's rows have ids above the last one before it and below it + this many times the texts sent (the
#: sequence skips ids only on rolled-back writes: a redelivery's, a reused task id's)
POLL_ID_SPAN = 1000
#: a round's polls are at least this far apart, and at most POLL_MAX_S (see ``poll_delay``)
POLL_MIN_S = 0.25
POLL_MAX_S = 2.0
#: the rows of a round so far, and the first internal-error row among them (see ``wait_rows``)
POLL_SQL = ("SELECT count(*), (SELECT error FROM predictions WHERE id > :a AND id <= :b AND status = 'error' "
            "AND error LIKE :e LIMIT 1) FROM predictions WHERE id > :a AND id <= :b")


#: the error a worker writes once per message of a batch that failed for a bug (worker/pipeline.py)
INTERNAL_ERROR = "internal error while classifying:%"


def last_row_id(engine) -> int:
    """The largest result row id so far (0 for none): a round's rows come after it."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(max(id), 0) FROM predictions")).scalar_one())


def poll_delay(done: int, n: int, elapsed: float) -> float:
    """Seconds until the next poll of a round that has ``done`` of its ``n`` rows after ``elapsed`` seconds: half
    the time the rest needs at the rate so far, within [POLL_MIN_S, POLL_MAX_S]. The round's time comes from its
    rows' own timestamps, so a poll's timing never changes it; but each poll costs the database a few ms of the
    CPU the workers run on (2 ms on a 5,000-row round here), charged to their throughput: a round of 5 s is
    polled about 8 times instead of 20."""
    if done <= 0 or elapsed <= 0:
        return POLL_MIN_S
    return min(POLL_MAX_S, max(POLL_MIN_S, 0.5 * (n - done) * elapsed / done))


def wait_rows(engine, n: int, workers: Sequence[WorkerProc], producer: Producer, timeout: float, quiet: bool,
              after_id: int = 0) -> None:
    """Poll Postgres until ``n`` rows with an id above ``after_id`` exist; fail early if a worker or the
    producer dies, or a worker failed a batch for an internal error (it writes one row per message then,
    not one per text, so the count would never reach ``n``). Each poll reads only the rows above
    ``after_id`` (a range of the primary key), so its cost does not grow with earlier rounds' rows: it
    shares the host with the workers it measures.

    The range has an upper bound too (far above any id the round can use): with ``id > :a`` alone the
    planner, without statistics on the round's new rows, estimated a third of the table and scanned all
    of it (17 ms a poll at 200,000 rows, 7 % of a core at four polls a second, growing round after round
    and charged to the workers' throughput); with both bounds it reads the pk index (0.6 ms)."""
    from sqlalchemy import text

    start = time.monotonic()
    deadline = start + timeout
    done = 0
    upto = after_id + POLL_ID_SPAN * max(n, 1)
    with progress_bar(total=n, desc="rows", unit="row", disable=quiet) as bar:
        while done < n:
            with engine.connect() as conn:
                done, failed = conn.execute(text(POLL_SQL), {"e": INTERNAL_ERROR, "a": after_id, "b": upto}).one()
            done = int(done or 0)
            where = f" (logs: {workers[0].log_path.parent})" if workers else ""
            if failed is not None:
                raise BenchError(f"a worker failed a batch: {failed}{where}")
            bar.update(done - bar.n)
            if done >= n:
                return
            producer.check()
            for w in workers:
                w.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"only {done} of {n} rows after {timeout:.0f}s{where}")
            now = time.monotonic()
            time.sleep(min(poll_delay(done, n, now - start), max(0.0, deadline - now) + 0.01))
