"""The batch thread of a worker (the write threads are in :mod:`worker.writer`).

The threads of a worker's pipeline (see :mod:`worker.service`): the receive thread decodes the
next messages while the **batch thread** embeds the current batch and applies the heads, while
the write threads commit the previous batches' rows and ack their messages. While a batch is
embedded, the **text thread** computes what the heads need from the texts alone (the TF-IDF
member's logits), so on a GPU host that CPU work hides behind the embedding. Model code
releases the GIL in its kernels, so the stages overlap. With ``EMBEDCLF_TEXT_THREADS`` > 1 the
text pool has that many threads and the heads of as many batches run at once (a host whose model
leaves cores idle: a GPU host); the batch thread waits only when all of them are busy.

Between two batches the batch thread's own Python (the next plan, its busy mark, the model's inputs) is on
the model's critical path: the model waits for it. So when the next batch is already due and the embedder
signals its model's start (:func:`embedclf.embedders.base.model_starting`: ONNX, the ``null`` device
stand-in), the previous batch's heads, the next batch's TF-IDF logits and the receiver's wake-up for the room
in the buffer wait for that moment: the other threads' Python then runs beside the model's kernels, not
against this thread for the GIL. Other embedders keep the plain order (heads at once, receiver at the take).

While the embedder fails in a way that is not the texts' fault (or the heads cannot be read from
Postgres) the batch is *held*, not requeued: the worker backs off, logs once per interval, and
carries on when the dependency returns. Its messages stay in its in-flight hash the whole time,
safe if the worker dies; such a wait never counts as an attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from sqlalchemy.exc import DBAPIError

from embedclf.classify import EmbedderUnavailable, Plan, plan_requests, torch_threads
from embedclf.embedders.base import nonfinite_rows, when_model_starts
from worker.backoff import Backoff
from worker.buffer import Buffer
from worker.inflight import Inflight
from worker.intake import Received
from worker.osthread import name_this_thread
from worker.resources import WorkerResources, is_connection_error
from worker.writer import Job, Writer

log = logging.getLogger(__name__)


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


class _Once:
    """``fn(*args)`` on the first call only."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __call__(self) -> None:
        fn, self.fn = self.fn, None
        if fn is not None:
            fn(*self.args)

    def cancel(self) -> None:
        self.fn = None


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
        #: where the heads' work on the texts alone runs while a batch is embedded (made at start); with
        #: ``head_overlap`` a batch's heads run there too, while this thread embeds the next batch
        self.text_pool: ThreadPoolExecutor | None = None
        #: the earlier batches' heads on the text pool, oldest first (at most ``text_threads`` of them)
        self._pending: deque[Future] = deque()
        #: the last batch's heads, held back while this thread prepares the next batch (see :meth:`_release`)
        self._held: tuple[Job, Plan, object, dict, dict] | None = None
        #: the receiver was told of the room the last batch taken left (see :meth:`_go`)
        self._room_told = True

    def start(self, warm_up_timeout_s: float = 0.0) -> None:
        """Start the thread; with a timeout, wait (at most that long) for its warm-up first."""
        if self.text_pool is None and self.res.settings.text_thread:
            self.text_pool = ThreadPoolExecutor(self.res.settings.text_threads, thread_name_prefix="embedclf-text",
                                                initializer=name_this_thread)
        self.thread.start()
        if warm_up_timeout_s > 0 and not self.warmed.wait(warm_up_timeout_s):
            log.warning("the embedder's warm-up takes more than %.0fs; receiving meanwhile", warm_up_timeout_s)

    @property
    def overlap(self) -> bool:
        return self.text_pool is not None and self.res.settings.head_overlap

    def close(self) -> None:
        """Let the text pool's thread go once the batch thread has stopped (a task still running finishes)."""
        if self.text_pool is not None:
            self.text_pool.shutdown(wait=False, cancel_futures=True)

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
            bad = nonfinite_rows(np.asarray(vectors))
            if bad.size:  # a broken model (or a wrong GPU type) would fail every text: say so at start
                log.error("warm-up: the embedder returned a vector with a NaN or an infinity for %d of %d "
                          "texts; such texts get error rows: is the model (or its offload) broken?", bad.size,
                          len(WARM_UP_TEXTS))

            def heads() -> None:
                with torch_threads(self.res.settings.head_threads):
                    for head in self.res.heads.cached().values():
                        if head.embedder_id == embedder.model_id and vectors.shape[1] == head.module.config.input_dim:
                            head.module.predict_proba(vectors, list(WARM_UP_TEXTS))

            if self.overlap:  # on the thread that will run them
                self.text_pool.submit(heads).result()  # type: ignore[union-attr]
            else:
                heads()
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
            if self._held is not None and not self.buffer.due():
                self._release()  # nothing to prepare first: the heads must not wait for the next batch
            # the receiver is woken for the room once the model runs (_go), not while this thread prepares it;
            # at once where no model will run without the GIL (an embedder that does not signal its start)
            signals = getattr(self.res.embedder, "signals_model_start", False)
            items = self.buffer.take(timeout=0.05 if self._busy else 0.5, notify=not signals)
            self._room_told = not signals
            if not items:
                self.collect()
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
                if not self._room_told:  # no model ran (a batch of errors)
                    self.buffer.notify_room()
        self.collect()  # the last batch's rows go to the writer before it finishes

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
        self._release()
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
        if not requests:
            self._submit(job)
            return
        heads, broken = self._heads({h for r in requests for h in r.heads}, group)
        embedder = self.res.embedder
        while True:
            plan = plan_requests(requests, embedder, heads, broken=broken)
            if not plan.runnable:
                job.rows = plan.rows
                self._submit(job)
                self._release()  # no model run to wait for
                return
            self._mark([p.tag for p in group if p.request is not None])
            go = _Once(self._go, plan)
            t0 = time.perf_counter()
            try:
                if getattr(embedder, "signals_model_start", False):  # once its inputs are built
                    with when_model_starts(go):
                        vectors, failed = plan.embed(embedder, self.chunk_size)
                else:
                    go()
                    vectors, failed = plan.embed(embedder, self.chunk_size)
                break
            except EmbedderUnavailable as exc:
                self._unmark()  # not the texts' fault: no attempt is charged
                self._wait(self._embed.failed(exc), group)
            finally:
                self.res.metrics.inference.observe(time.perf_counter() - t0)
                go.cancel()
                self._release()  # if the embedder never started its model (it failed first)
        self._embed.ok()
        job.busy = self._busy
        if self.overlap:  # the heads run on the text pool while this thread embeds the next batch
            self.collect(keep=self.res.settings.text_threads - 1)
            self._held = (job, plan, vectors, failed, heads)  # submitted by _release: at once or after the next plan
            if not getattr(embedder, "signals_model_start", False):
                self._release()  # no model run without the GIL to wait for: the heads overlap the next plan
        else:
            self._finish(job, plan, vectors, failed, heads)

    def _go(self, plan: Plan) -> None:
        """The model starts on ``plan``'s texts: this thread's Python is done until it returns, so the receiver
        may fill the room this batch left, and the text pool gets the previous batch's heads and this batch's
        TF-IDF logits. Never raises (it runs inside the embedder)."""
        try:
            if not self._room_told:
                self.buffer.notify_room()
                self._room_told = True
            self._release()
            if self.text_pool is not None:
                plan.start_ahead(self.text_pool)
        except Exception:  # noqa: BLE001 - the heads run later (collect) or compute their TF-IDF themselves
            log.exception("cannot hand the text pool its work")

    def _release(self) -> None:
        """Hand the held batch's heads to the text pool."""
        held, self._held = self._held, None
        if held is None:
            return
        try:
            self._pending.append(self.text_pool.submit(self._finish, *held))  # type: ignore[union-attr]
        except RuntimeError:  # the pool is shut down: a hard stop passed this thread by
            if not self.stop_event.is_set():
                raise
            # its messages stay in flight: stopping hands them back to the queue (not charged)
            log.info("stopping: the heads of a batch of %d messages were not run", len(held[0].items))

    def _finish(self, job: Job, plan: Plan, vectors, failed, heads) -> None:
        """Apply the heads and hand the rows to the writer; never raises (a failure: error rows)."""
        t0 = time.perf_counter()
        try:
            job.rows = plan.finish(vectors, failed, heads, head_threads=self.res.settings.head_threads)
        except Exception as exc:  # noqa: BLE001 - a bug must not loop: the group gets error rows
            log.exception("heads failed on a batch of %d messages", len(job.items))
            self.writer.submit(Job(job.items, internal_error_rows(job.items, exc)))
            return
        finally:
            self.res.metrics.heads.observe(time.perf_counter() - t0)
        self._submit(job)

    def _submit(self, job: Job) -> None:
        for p in job.items:
            job.rows.extend(p.errors)
        self.writer.submit(job)

    def collect(self, keep: int = 0) -> None:
        """Wait until the earlier batches' heads have run and their rows are with the writer, all but the
        newest ``keep`` of them (a thread of the text pool for the next batch's heads)."""
        self._release()
        while len(self._pending) > keep:
            self._pending.popleft().result()
