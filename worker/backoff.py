"""Waiting out an unavailable dependency: exponential delays, one log line per interval."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class Backoff:
    """Exponential waits with one log line per ``log_every_s`` (not one per failure)."""

    def __init__(self, what: str, start_s: float = 0.2, max_s: float = 5.0, log_every_s: float = 10.0) -> None:
        self.what, self.start_s, self.max_s, self.log_every_s = what, start_s, max_s, log_every_s
        self.delay = start_s
        self.since: float | None = None
        self._logged = float("-inf")
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        self.failures += 1
        if now - self._logged >= self.log_every_s:
            self._logged = now
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
            log.warning("%s unavailable for %.0fs (%d failed tries; %s); retrying", self.what, now - self.since,
                        self.failures, reason)
        delay, self.delay = self.delay, min(self.delay * 2, self.max_s)
        return delay

    def ok(self) -> None:
        if self.since is not None:
            log.warning("%s is back after %.1fs (%d failed tries)", self.what, time.monotonic() - self.since,
                        self.failures)
        self.delay, self.since, self.failures = self.start_s, None, 0
