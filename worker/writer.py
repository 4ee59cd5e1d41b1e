"""The write threads of a worker: commit each batch's rows, then ack its messages.

Nothing is acked without its rows. While Postgres is unreachable the rows are *held*: the thread
backs off, logs once per interval, and carries on when the database returns; the messages stay in
the worker's in-flight hash the whole time, safe if the worker dies, and such a wait never counts
as an attempt (the batch's busy marker is cleared while it waits).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError

from embedclf.store.results import WriteResult
from worker.backoff import Backoff
from worker.inflight import Inflight
from worker.intake import Received
from worker.osthread import name_this_thread
from worker.resources import WorkerResources, is_connection_error

log = logging.getLogger(__name__)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class Stamps:
    """Each batch's ``completed_at``: this process's wall clock in microseconds, never the same twice and
    increasing in the order batches are taken for writing. Parallel write threads each used their own
    transaction's ``now()``, so two of them could stamp different batches alike (a group of k batches
    spans k microseconds) and write a later batch before an earlier one: ``(worker, completed_at)``
    named a batch and ordered batches only most of the time."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last = 0

    def take(self, n: int = 1) -> dt.datetime:
        """The first of ``n`` consecutive microsecond stamps (the rest are taken with it)."""
        with self._lock:
            first = max(self._clock() // 1000, self._last + 1)
            self._last = first + max(1, n) - 1
        return _EPOCH + dt.timedelta(microseconds=first)


@dataclass
class Job:
    """A group of messages on its way through the pipeline."""

    items: list[Received]
    rows: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    #: the busy marker set while this job was embedded (see Inflight.mark_busy)
    busy: str | None = None



class Writer:
    """Commits each job's rows (retrying while Postgres is unreachable), then acks its messages.

    ``threads`` write in parallel, each on its own connection: while one waits for its commit to
    reach the disk, another sends its rows (the order of batches does not matter: rows are keyed).
    """

    def __init__(self, res: WorkerResources, inflight: Inflight, depth: int = 6, threads: int = 3,
                 after_commit: Callable[[Job, Any], None] | None = None, group_rows: int = 2048) -> None:
        self.res, self.inflight = res, inflight
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=depth)
        self.after_commit = after_commit
        self.threads = [threading.Thread(target=self._run, name=f"embedclf-write-{i}", daemon=True)
                        for i in range(max(1, threads))]
        self.abort = threading.Event()  # set on a hard stop: give up waiting for Postgres/Redis
        self._local = threading.local()  # each thread's backoff state
        self._lock = threading.Lock()  # after-commit hooks (events, results) run one at a time
        self.batches = 0
        self.stamps = Stamps()
        self._take_lock = threading.Lock()  # a group is taken and stamped in one step, so stamps follow the queue
        #: a thread writes the jobs waiting behind the one it took in the same transaction, up to this many rows
        self.group_rows = group_rows

    @property
    def _db(self) -> Backoff:
        if not hasattr(self._local, "db"):
            self._local.db = Backoff("database (write)")
        return self._local.db

    @property
    def _redis(self) -> Backoff:
        if not hasattr(self._local, "redis"):
            self._local.redis = Backoff("broker (ack)")
        return self._local.redis

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def finish(self, timeout: float) -> bool:
        """Write what was submitted, then stop; False if that took longer than ``timeout``."""
        import time as _time

        deadline = _time.monotonic() + timeout
        try:
            for _ in self.threads:
                self.jobs.put(None, timeout=max(0.0, deadline - _time.monotonic()))
        except queue.Full:
            return False
        for t in self.threads:
            t.join(max(0.0, deadline - _time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def release(self, tags: list[int], why: str) -> None:
        """Hand messages back to the queue without a row (nothing charged); logged."""
        if not tags:
            return
        try:
            n = self.inflight.release(tags)
            self.res.metrics.requeued.inc(n)
            log.info("%s: returned %d message(s) to the queue", why, n)
        except Exception as exc:  # noqa: BLE001 - Redis down: they come back when this worker's heartbeat expires
            log.warning("%s: could not return %d message(s) now (%s); they come back once this worker's "
                        "heartbeat expires", why, len(tags), exc)

    def _run(self) -> None:
        name_this_thread()
        while True:
            with self._take_lock:
                job = self.jobs.get()
                if job is None:
                    return
                jobs, stop = self._more(job)
                at = self.stamps.take(len(jobs))
            try:
                self._write(jobs, at)
            except Exception:  # noqa: BLE001 - never lose the thread; the messages go back
                tags = [p.tag for j in jobs for p in j.items]
                log.exception("writing a batch of %d messages failed; returning them to the queue", len(tags))
                self.release(tags, "write failed")
            if stop:
                return

    def _more(self, job: Job) -> tuple[list[Job], bool]:
        """``job`` and the jobs already waiting behind it, up to :attr:`group_rows` rows: written in one
        statement and one commit (Postgres is the slower stage, so a backlog means bigger transactions,
        fewer commits and round trips, not longer waits). True when the stop marker was taken."""
        jobs, rows = [job], len(job.rows)
        while rows < self.group_rows:
            try:
                nxt = self.jobs.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return jobs, True
            jobs.append(nxt)
            rows += len(nxt.rows)
        return jobs, False

    def _write(self, jobs: list[Job], at: dt.datetime | None = None) -> None:
        res = self.res
        # one job for the whole group: its messages, its rows, and the newest busy marker (the
        # marker is cleared during a database wait only if no later batch replaced it)
        job = jobs[0] if len(jobs) == 1 else Job([p for j in jobs for p in j.items], [r for j in jobs for r in j.rows],
                                                 busy=next((j.busy for j in reversed(jobs) if j.busy), None))
        received: dict[str, Any] = {}
        for p in job.items:
            received.setdefault(p.task_id, p.received_at)
        for row in job.rows:  # each row carries its own message's fingerprint (set by classify/intake)
            row["received_at"], row["worker"] = received.get(row["task_id"]), res.hostname
        t0 = time.perf_counter()
        sizes = [len(j.rows) for j in jobs] if len(jobs) > 1 else None  # each batch its own completed_at
        try:
            result = self._commit(job.rows, job.busy, sizes, at)
        except (DBAPIError, TypeError, ValueError) as exc:  # not a connection problem: find the message at fault
            log.warning("a batch's rows were refused (%s); writing its messages one by one",
                        getattr(exc, "orig", None) or exc)
            result = self._commit_each(job)
        if result is None:
            self.release([p.tag for p in job.items], "worker stopping while the database is unreachable")
            return
        res.metrics.write.observe(time.perf_counter() - t0)
        sha1s = [p.entry.sha1 or _sha1(p) for p in job.items if p.entry.deaths > 0]
        tags = [p.tag for p in job.items]
        while True:
            try:
                self.inflight.ack(tags, sha1s)
                self._redis.ok()
                break
            except Exception as exc:  # noqa: BLE001 - redis errors: the rows are committed, keep trying
                if self.abort.wait(self._redis.failed(exc)):
                    return  # unacked: redelivered after the heartbeat expires, a no-op then
        res.record(jobs, result)
        for one in jobs:  # events and results per batch, as the batches were built
            with self._lock:
                self.batches += 1
                if self.after_commit is not None:
                    try:
                        self.after_commit(one, result)
                    except Exception:  # noqa: BLE001 - events/results must not stop the pipeline
                        log.exception("after-commit hook failed")
        log.debug("%d batch(es): %d messages, %d rows in %.1f ms", len(jobs), len(job.items), result.inserted,
                  1000 * (time.perf_counter() - job.started))


    def _commit(self, rows: list[dict], busy: str | None = None, sizes: list[int] | None = None,
                at: dt.datetime | None = None) -> WriteResult | None:
        """Write rows, waiting out connection failures; None when stopped meanwhile. ``at``: the first
        batch's stamp (None: a new one; a retry after a wait takes a new one too, as the write is later)."""
        while True:
            if at is None:
                at = self.stamps.take(len(sizes) if sizes else 1)
            try:
                result = self.res.write_results(rows, sizes, at)
                self._db.ok()
                return result
            except DBAPIError as exc:
                if not is_connection_error(exc):
                    raise
                if busy is not None:  # waiting for Postgres is not processing: a death now is not charged
                    try:
                        self.inflight.clear_busy(busy, from_marking_thread=False)
                        busy = None
                    except Exception:  # noqa: BLE001
                        pass
                if self.abort.wait(self._db.failed(exc)):
                    return None
                at = None

    def _commit_each(self, job: Job) -> WriteResult | None:
        from embedclf.classify import error_row

        inserted, dupes, conflicts, keys = 0, 0, [], set()
        by_task: dict[str, list[dict]] = {}
        for r in job.rows:
            by_task.setdefault(r["task_id"], []).append(r)
        for p in job.items:
            rows = by_task.pop(p.task_id, [])
            if not rows:
                continue  # a task id twice in the group: its rows went with the first
            try:
                result = self._commit(rows)
            except (DBAPIError, TypeError, ValueError) as exc:
                reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
                log.error("the rows of task %s cannot be stored (%s); writing an error row instead", p.task_id, reason)
                row = error_row(p.task_id, f"result could not be stored: {reason}", item=None)
                row.update(received_at=p.received_at, worker=self.res.hostname, fingerprint=p.fingerprint)
                try:
                    result = self._commit([row])
                except DBAPIError:
                    log.exception("task %s: not even its error row can be stored; dropping it", p.task_id)
                    continue
            if result is None:
                return None
            inserted, dupes = inserted + result.inserted, dupes + result.duplicates
            conflicts += result.conflicts
            keys |= result.inserted_keys
        return WriteResult(inserted, dupes, conflicts, keys)


def _sha1(p: Received) -> str:
    import hashlib

    return hashlib.sha1(p.entry.raw or b"").hexdigest()
