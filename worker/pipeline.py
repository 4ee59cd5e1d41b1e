"""The batch thread and the write thread of a worker.

Three threads run a worker's pipeline (see :mod:`worker.service`): the receive thread decodes
the next messages while the **batch thread** embeds the current batch and applies the heads,
while the **write thread** commits the previous batch's rows and acks its messages. Model code
releases the GIL in its kernels, so the stages overlap.

Nothing is acked without its rows. While Postgres is unreachable (or the embedder fails in a way
that is not the texts' fault) the batch is *held*, not requeued: the worker backs off, logs once
per interval, and carries on when the dependency returns. Its messages stay in its in-flight
hash the whole time, safe if the worker dies; such a wait never counts as an attempt.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError

from embedclf.classify import EmbedderUnavailable, classify_requests, torch_threads
from embedclf.store.results import WriteResult
from worker.backoff import Backoff
from worker.buffer import Buffer
from worker.inflight import Inflight
from worker.intake import Received
from worker.osthread import name_this_thread
from worker.resources import WorkerResources, is_connection_error

log = logging.getLogger(__name__)


@dataclass
class Job:
    """A group of messages on its way through the pipeline."""

    items: list[Received]
    rows: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    #: the busy marker set while this job was embedded (see Inflight.mark_busy)
    busy: str | None = None


def internal_error_rows(group: list[Received], exc: BaseException) -> list[dict]:
    """One error row per message of a group that failed for a reason no retry would fix."""
    from embedclf.classify import error_row

    message = f"internal error while classifying: {type(exc).__name__}: {exc}"
    return [error_row(p.task_id, message, item=None, fingerprint=p.fingerprint) for p in group]


#: what the batch thread embeds before its first batch (short, ordinary sentences of a few lengths)
WARM_UP_TEXTS = tuple(" ".join(["the order I placed last week has not arrived yet"] * k)
                      for k in (1, 2, 1, 3, 1, 2, 1, 1))


class Stopping(Exception):
    """The worker is shutting down while a batch waits: the batch is released, not finished."""


class BatchLoop:
    """Takes batches from the buffer, embeds and classifies them, hands rows to the writer."""

    def __init__(self, res: WorkerResources, buffer: Buffer[Received], inflight: Inflight,
                 writer: Writer, chunk_size: int) -> None:
        self.res, self.buffer, self.inflight, self.writer = res, buffer, inflight, writer
        self.chunk_size = chunk_size
        self.stop_event = threading.Event()
        self.busy = threading.Event()  # a batch is being worked on (not just waited for)
        self.warmed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="embedclf-batch", daemon=True)
        self._db = Backoff("database (head refresh)")
        self._embed = Backoff("embedder")
        self._busy: str | None = None

    def start(self, warm_up_timeout_s: float = 0.0) -> None:
        """Start the thread; with a timeout, wait (at most that long) for its warm-up first."""
        self.thread.start()
        if warm_up_timeout_s > 0 and not self.warmed.wait(warm_up_timeout_s):
            log.warning("the embedder's warm-up takes more than %.0fs; receiving meanwhile", warm_up_timeout_s)

    def warm_up(self) -> None:
        """Embed and classify a few dummy texts on this thread before the first real batch.

        A model's first call on a thread pays one-off costs (the thread pool of its kernels, memory
        pools, kernel selection; for llama.cpp, the compute graph's buffers) that would otherwise land
        on the first tasks' latency. Never fails: a problem here is logged, and real batches report
        their own errors."""
        t0 = time.perf_counter()
        try:
            embedder = self.res.embedder
            vectors = embedder.embed_batch(WARM_UP_TEXTS)
            with torch_threads(self.res.settings.head_threads):
                for head in self.res.heads.cached().values():
                    if head.embedder_id == embedder.model_id and vectors.shape[1] == head.module.config.input_dim:
                        head.module.predict_proba(vectors, list(WARM_UP_TEXTS))
            log.info("warm-up: %d texts embedded and classified in %.2fs", len(WARM_UP_TEXTS),
                     time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - a warm-up must not stop the worker
            log.warning("warm-up failed (%s: %s); the first batch pays the model's start-up costs",
                        type(exc).__name__, str(exc)[:200])
        finally:
            self.warmed.set()

    def _run(self) -> None:
        name_this_thread()
        self.warm_up()
        while not self.stop_event.is_set():
            items = self.buffer.take(timeout=0.05 if self._busy else 0.5)
            if not items:
                if self._busy:  # idle: what was embedded last is only being written now
                    self._unmark()
                continue
            self.busy.set()
            try:
                for group in self._groups(items):
                    try:
                        self._process(group)
                    except Stopping:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a bug must not loop: the group gets error rows
                        log.exception("batch of %d messages failed unexpectedly", len(group))
                        self.writer.submit(Job(group, internal_error_rows(group, exc)))
            except Stopping:
                pass  # the messages stay in flight; stopping hands them back to the queue (not charged)
            finally:
                self.busy.clear()

    @staticmethod
    def _groups(items: list[Received]) -> list[list[Received]]:
        # A message whose worker died while processing it runs alone, so a poison text only
        # takes itself down, never the messages that happened to share its batch.
        first = [p for p in items if p.entry.deaths == 0 or p.request is None]
        retried = [[p] for p in items if p.entry.deaths > 0 and p.request is not None]
        return ([first] if first else []) + retried

    def _heads(self, wanted: set[str], pending: list[Received]) -> tuple[dict, dict]:
        while True:
            try:
                heads = self.res.heads.snapshot(wanted=wanted)
                self._db.ok()
                return heads, dict(self.res.heads.broken)
            except DBAPIError as exc:
                if not is_connection_error(exc):
                    raise
                self._wait(self._db.failed(exc), pending)

    def _wait(self, delay: float, pending: list[Received]) -> None:
        if self.stop_event.wait(delay):
            raise Stopping(pending)

    def _mark(self, tags: list[int]) -> None:
        try:
            self._busy = self.inflight.mark_busy(tags)
        except Exception as exc:  # noqa: BLE001 - best effort: only the attempt attribution is lost
            self._busy = None
            log.warning("cannot mark the batch in Redis (%s); a crash now would not be charged to it", exc)

    def _unmark(self) -> None:
        token, self._busy = self._busy, None
        if token is not None:
            try:
                self.inflight.clear_busy(token)
            except Exception as exc:  # noqa: BLE001
                log.warning("cannot unmark the batch in Redis (%s)", exc)

    def _process(self, group: list[Received]) -> None:
        job = Job(group)
        requests = [p.request for p in group if p.request is not None]
        if requests:
            heads, broken = self._heads({h for r in requests for h in r.heads}, group)
            while True:
                self._mark([p.tag for p in group if p.request is not None])
                t0 = time.perf_counter()
                try:
                    job.rows = classify_requests(requests, self.res.embedder, heads, chunk_size=self.chunk_size,
                                                 broken=broken, head_threads=self.res.settings.head_threads)
                    break
                except EmbedderUnavailable as exc:
                    self._unmark()  # not the texts' fault: no attempt is charged
                    self._wait(self._embed.failed(exc), group)
                finally:
                    self.res.metrics.inference.observe(time.perf_counter() - t0)
            self._embed.ok()
            job.busy = self._busy
        for p in group:
            job.rows.extend(p.errors)
        self.writer.submit(job)


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
            job = self.jobs.get()
            if job is None:
                return
            jobs, stop = self._more(job)
            try:
                self._write(jobs)
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

    def _write(self, jobs: list[Job]) -> None:
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
            result = self._commit(job.rows, job.busy, sizes)
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


    def _commit(self, rows: list[dict], busy: str | None = None,
                sizes: list[int] | None = None) -> WriteResult | None:
        """Write rows, waiting out connection failures; None when stopped meanwhile."""
        while True:
            try:
                result = self.res.write_results(rows, sizes)
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
