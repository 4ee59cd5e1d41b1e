"""BatchRunner: jobs run in order on one helper thread; results come back on the caller's thread."""

from __future__ import annotations

import select
import threading
import time

import pytest

from worker.runner import BatchRunner


def wait_drain(runner: BatchRunner, want: int, timeout: float = 10.0) -> int:
    got, deadline = 0, time.monotonic() + timeout
    while got < want and time.monotonic() < deadline:
        select.select([runner.wakeup_fd], [], [], 0.1)
        got += runner.drain()
    return got


@pytest.fixture
def runner():
    r = BatchRunner(name="test-runner")
    yield r
    r.close(timeout=5)


def test_jobs_run_in_order_off_thread_and_results_come_back_on_drain(runner):
    main = threading.get_ident()
    ran_on: list[int] = []
    results: list[tuple[int, int]] = []

    def job(i: int):
        def run():
            ran_on.append(threading.get_ident())
            time.sleep(0.01)
            return i * i
        return run

    for i in range(5):
        runner.submit(job(i), lambda r, i=i: results.append((i, r)))
    assert results == []  # nothing is delivered behind the caller's back
    assert wait_drain(runner, 5) == 5
    assert results == [(i, i * i) for i in range(5)]
    assert len(set(ran_on)) == 1 and ran_on[0] != main


def test_the_wakeup_fd_becomes_readable_when_a_job_finishes(runner):
    gate = threading.Event()
    runner.submit(gate.wait, lambda r: None)
    assert select.select([runner.wakeup_fd], [], [], 0.1)[0] == []  # still running
    gate.set()
    assert select.select([runner.wakeup_fd], [], [], 5)[0] == [runner.wakeup_fd]
    assert runner.drain() == 1
    assert select.select([runner.wakeup_fd], [], [], 0)[0] == []  # drained: quiet again


def test_a_raising_job_hands_its_exception_to_done_and_the_thread_lives_on(runner):
    out: list[object] = []
    runner.submit(lambda: 1 / 0, out.append)
    runner.submit(lambda: "after", out.append)
    assert wait_drain(runner, 2) == 2
    assert isinstance(out[0], ZeroDivisionError) and out[1] == "after"


def test_attach_registers_the_pipe_with_a_hub_or_polls_with_a_timer(runner):
    class Hub:
        readers: dict = {}

        def add_reader(self, fd, cb):
            self.readers[fd] = cb

    hub = Hub()
    assert runner.attach(hub) is None
    assert hub.readers == {runner.wakeup_fd: runner.drain}

    class Timer:
        def call_repeatedly(self, secs, fun):
            self.args = (secs, fun)
            return "tref"

    timer = Timer()
    assert runner.attach(None, timer, poll_s=0.01) == "tref" and timer.args == (0.01, runner.drain)
    with pytest.raises(ValueError, match="hub or a timer"):
        runner.attach(None, None)
