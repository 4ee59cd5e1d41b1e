"""Several worker processes from one command: ``embedclf worker --processes N``.

One worker process is capped by its one GIL, not by its cores or its GPU: on an H200 with MiniLM, one
process delivered about 0.6 of what the model embeds alone (docs/benchmarks.md). Several processes
sharing the GPU lift that cap, as ``gunicorn -w`` or ``celery -c`` do for their workers. This module is
the small parent that runs them:

- it starts ``n`` children (each a complete worker: its own model, heads, threads, heartbeat and
  in-flight hash, so delivery guarantees are per child and unchanged) and waits;
- a child that dies (``kill -9``, OOM, a segfault, any non-zero exit) is started again after a
  backoff (1 s, doubling to 30 s while it keeps dying young); what it held is returned to the queue by
  the other workers' heartbeats, as for any dead worker;
- a child that keeps failing within ``min_uptime_s`` of its start (a bad setting, a model that does not
  load) ``max_quick_fails`` times in a row stops them all: the command exits with that child's status
  instead of looping;
- a child that exits 0 (``celery control shutdown``) is not replaced; the command ends, with 0, when
  none is left;
- SIGTERM or SIGINT is passed on as one SIGTERM to every child (a warm shutdown: each finishes and
  writes its batch); children still running ``stop_timeout_s`` later are killed. Children run in their
  own session, so a terminal's Ctrl-C reaches them only through this parent (one signal, not two:
  a second SIGINT would make Celery stop cold), and the kernel sends them SIGTERM if this parent dies.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger("embedclf.supervisor")

#: ``prctl(PR_SET_PDEATHSIG, ...)``: the signal a child gets when its parent dies (Linux)
_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """What a child runs between fork and exec so the kernel sends it SIGTERM when this process dies (Linux
    ``prctl``, looked up here, before any fork: the child only calls it); None elsewhere."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the children outlive a killed parent
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def describe_status(rc: int) -> str:
    """``exit status 1`` or ``killed by SIGKILL`` for a Popen return code."""
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


@dataclass
class Slot:
    """One child's place: the process now running in it (None while it waits to be restarted)."""

    index: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    quick_fails: int = 0
    restart_at: float | None = None
    done: bool = False  # exited 0: not replaced


class Supervisor:
    """Runs ``n`` children, ``argv_for(i)`` with ``env_for(i)``, until they end or it is told to stop."""

    def __init__(self, n: int, argv_for: Callable[[int], Sequence[str]], env_for: Callable[[int], Mapping[str, str]],
                 *, stop_timeout_s: float = 75.0, min_uptime_s: float = 30.0, max_quick_fails: int = 3,
                 backoff_s: tuple[float, float] = (1.0, 30.0), poll_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.slots = [Slot(i) for i in range(n)]
        self.argv_for, self.env_for = argv_for, env_for
        self.stop_timeout_s, self.min_uptime_s, self.max_quick_fails = stop_timeout_s, min_uptime_s, max_quick_fails
        self.backoff_s, self.poll_s, self.clock = backoff_s, poll_s, clock
        self.stopping = False
        self.restarts = 0
        self._preexec = _parent_death_signal()

    # -- children ------------------------------------------------------------------------------------------
    def _start(self, slot: Slot) -> None:
        slot.proc = subprocess.Popen(list(self.argv_for(slot.index)), env=dict(self.env_for(slot.index)),
                                     start_new_session=True, preexec_fn=self._preexec)
        slot.started, slot.restart_at = self.clock(), None
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.poll() is None]

    def _reap(self, slot: Slot) -> int | None:
        """Handle ``slot``'s child if it has exited; the status to exit with when the supervisor must give up."""
        assert slot.proc is not None
        rc = slot.proc.poll()
        if rc is None:
            return None
        pid, uptime, slot.proc = slot.proc.pid, self.clock() - slot.started, None
        if self.stopping:
            return None
        if rc == 0:
            log.info("worker %d (pid %d) exited cleanly: not replaced", slot.index, pid)
            slot.done = True
            return None
        slot.quick_fails = slot.quick_fails + 1 if uptime < self.min_uptime_s else 1
        if slot.quick_fails >= self.max_quick_fails and uptime < self.min_uptime_s:
            log.error("worker %d failed %d times within %.0f s of its start (last: pid %d, %s): stopping all workers",
                      slot.index, slot.quick_fails, self.min_uptime_s, pid, describe_status(rc))
            return rc if rc > 0 else 1
        delay = min(self.backoff_s[1], self.backoff_s[0] * 2 ** (slot.quick_fails - 1))
        log.warning("worker %d (pid %d) died after %.1f s (%s): restarting it in %.0f s",
                    slot.index, pid, uptime, describe_status(rc), delay)
        slot.restart_at = self.clock() + delay
        return None

    # -- the loop ------------------------------------------------------------------------------------------
    def request_stop(self, signum: int = signal.SIGTERM, _frame: object = None) -> None:
        """Signal handler: stop every child (warm shutdown) and end :meth:`run`."""
        if not self.stopping:
            log.info("received %s: stopping %d worker(s)", signal.Signals(signum).name, len(self.pids()))
        self.stopping = True

    def run(self) -> int:
        """Start the children and supervise them; the command's exit status."""
        for slot in self.slots:
            self._start(slot)
        status = 0
        while not self.stopping:
            for slot in self.slots:
                if slot.proc is not None:
                    give_up = self._reap(slot)
                    if give_up is not None:
                        status, self.stopping = give_up, True
                        break
                elif slot.restart_at is not None and self.clock() >= slot.restart_at:
                    self.restarts += 1
                    self._start(slot)
            if all(s.done for s in self.slots):
                log.info("every worker exited cleanly")
                return 0
            time.sleep(self.poll_s)
        self._stop_all()
        return status

    def _stop_all(self) -> None:
        live = [s.proc for s in self.slots if s.proc is not None and s.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = self.clock() + self.stop_timeout_s
        for proc in live:
            try:
                proc.wait(timeout=max(0.0, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d still running %.0f s after SIGTERM: killing it", proc.pid, self.stop_timeout_s)
                proc.kill()
                proc.wait()
        for slot in self.slots:
            slot.proc = None


def worker_names(args: Sequence[str], n: int) -> tuple[list[str], list[str]]:
    """Celery's arguments without a ``-n/--hostname`` option, and ``n`` distinct node names: the given name
    with ``-<i>`` added before its ``@`` (``embedclf@%h`` when none was given)."""
    rest: list[str] = []
    name = "embedclf@%h"
    it = iter(args)
    for a in it:
        if a in ("-n", "--hostname"):
            name = next(it, name)
        elif a.startswith("--hostname="):
            name = a.split("=", 1)[1]
        else:
            rest.append(a)
    local, at, host = name.partition("@")
    return rest, [f"{local}-{i}{at}{host}" for i in range(n)]


def run_processes(n: int, celery_args: Sequence[str], env: Mapping[str, str], *, metrics_port: int,
                  stop_timeout_s: float) -> int:
    """``embedclf worker --processes n``: ``n`` solo Celery workers under one :class:`Supervisor`. With a
    metrics port P, child i serves its metrics and probes on P + i."""
    rest, names = worker_names(celery_args, n)

    def argv_for(i: int) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "solo", *rest, "-n", names[i]]

    def env_for(i: int) -> dict[str, str]:
        return {**env, **({"EMBEDCLF_METRICS_PORT": str(metrics_port + i)} if metrics_port else {})}

    sup = Supervisor(n, argv_for, env_for, stop_timeout_s=stop_timeout_s)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, sup.request_stop)
    return sup.run()
