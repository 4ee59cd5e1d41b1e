"""One helper thread that runs batches while the consuming thread keeps receiving.

With the solo pool the Celery event loop and the batch work share one thread: while a
batch is embedded no message is received, so the next batch starts empty and fills
only as fast as messages can be read one by one, and its max-wait timer cuts it short.
Running the batch on a helper thread overlaps the two. Model code releases the GIL in
its kernels, so receiving costs the embedding little.

Results come back to the event loop through a pipe registered with the loop (or a
polling timer where there is no loop): acks, rejects and everything else that touches
the broker connection stay on the consuming thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, Callable

from celery import bootsteps

log = logging.getLogger(__name__)

Job = Callable[[], Any]
Done = Callable[[Any], None]


class BatchRunner:
    """Runs submitted jobs one at a time, in order, on a daemon thread."""

    def __init__(self, name: str = "embedclf-batch") -> None:
        self._jobs: queue.SimpleQueue[tuple[Job, Done] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[Done, Any]] = queue.SimpleQueue()
        self._pending = 0  # submitted, not yet finished
        #: set while the consumer stops: no new batch is started (see FinishBatches)
        self.stopping = False
        self._lock = threading.Lock()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def wakeup_fd(self) -> int:
        """Readable whenever results wait for :meth:`drain`."""
        return self._rfd

    def attach(self, hub: Any = None, timer: Any = None, poll_s: float = 0.005) -> Any:
        """Have the event loop call :meth:`drain` when a job finishes.

        ``hub``: a kombu Hub (the worker's event loop): the pipe is registered as a
        reader. Without one, ``timer`` polls every ``poll_s``; returns its handle.
        """
        if hub is not None:
            hub.add_reader(self._rfd, self.drain)
            return None
        if timer is None:
            raise ValueError("need a hub or a timer to hand results back")
        return timer.call_repeatedly(poll_s, self.drain)

    def submit(self, job: Job, done: Done) -> None:
        """Run ``job()`` on the helper thread; ``done(result)`` is later called from :meth:`drain`.

        ``job`` must not raise (it should catch and return its failures): an exception
        escaping it is logged and passed to ``done`` as the result.
        """
        with self._lock:
            self._pending += 1
        self._jobs.put((job, done))

    def wait_idle(self, timeout: float) -> bool:
        """Block until every submitted job has finished (not yet drained); False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._pending == 0:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def drain(self, *_: Any) -> int:
        """Deliver finished jobs' results (call on the consuming thread); returns how many."""
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            pass
        n = 0
        while True:
            try:
                done, result = self._results.get_nowait()
            except queue.Empty:
                return n
            n += 1
            done(result)

    def close(self, timeout: float | None = None) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            entry = self._jobs.get()
            if entry is None:
                return
            job, done = entry
            try:
                result = job()
            except BaseException as exc:  # noqa: BLE001 - handed to ``done``; the thread must live on
                log.exception("batch job raised")
                result = exc
            self._results.put((done, result))
            with self._lock:
                self._pending -= 1
            try:
                os.write(self._wfd, b"x")
            except BlockingIOError:  # pipe full: the loop has wake-ups pending already
                pass


_runner: BatchRunner | None = None
_runner_lock = threading.Lock()


def current_runner() -> BatchRunner | None:
    """This process's runner if one was started, without starting one."""
    return _runner


def get_runner() -> BatchRunner:
    """This process's runner, started on first use (never at import time)."""
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = BatchRunner()
        return _runner


class FinishBatches(bootsteps.StartStopStep):
    """Consumer bootstep: on warm shutdown, finish the batch in flight and ack it.

    Steps stop in reverse start order, so this runs while the broker connection is still
    open: the running batch commits its rows and its messages are acked instead of being
    redelivered. Messages still waiting in the buffer are not started; the connection's
    close hands them back to Redis at once.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)
    #: longest wait for a running batch; then its messages are simply redelivered
    timeout_s = 120.0

    def stop(self, c: Any) -> None:
        runner = current_runner()
        if runner is None:
            return
        runner.stopping = True  # the batch in flight finishes; none is started after it
        if not runner.wait_idle(self.timeout_s):
            log.warning("shutdown: a batch still runs after %.0f s; its tasks will be redelivered", self.timeout_s)
        runner.drain()

    shutdown = stop
