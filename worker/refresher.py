"""The head refresher: a worker thread that keeps the active heads fresh, off the batch thread.

Every ``EMBEDCLF_HEAD_REFRESH_S`` it polls Postgres for the active versions and loads any new one
(:meth:`worker.resources.HeadCache.refresh_now`). The batch thread then takes the heads as they are
(:attr:`HeadCache.background`): it waits neither for the poll (a round trip every interval, a few
milliseconds with the GIL shared) nor for a new version's load (reading its weights and building it,
which can take longer than a batch), so activating a version does not stall the model. While
Postgres is unreachable the refresher backs off and the cached heads are served, as before.
"""

from __future__ import annotations

import threading

from worker.backoff import Backoff
from worker.osthread import name_this_thread
from worker.resources import HeadCache


class HeadRefresher:
    """Calls ``cache.refresh_now()`` every ``interval_s`` on its own thread (``embedclf-heads``)."""

    def __init__(self, cache: HeadCache, interval_s: float) -> None:
        self.cache, self.interval_s = cache, interval_s
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="embedclf-heads", daemon=True)
        self._backoff = Backoff("database (head refresh)")
        self.refreshes = 0

    def start(self) -> None:
        self.cache.background = True
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)
        self.cache.background = False  # a snapshot now polls itself again, as without a refresher

    def _run(self) -> None:
        name_this_thread()
        delay = self.interval_s
        while not self.stop_event.wait(delay):
            try:
                self.cache.refresh_now()
            except Exception as exc:  # noqa: BLE001 - Postgres down or a bug: the cached heads are served
                delay = max(self._backoff.failed(exc), min(self.interval_s, 1.0))
                continue
            self._backoff.ok()
            self.refreshes += 1
            delay = self.interval_s
