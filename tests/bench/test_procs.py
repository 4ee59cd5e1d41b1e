"""Per-thread CPU of a benchmarked process, from /proc: precise where the kernel has ``sched``."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from embedclf.bench.procs import _sched_runtime_s

TASK = Path(f"/proc/{os.getpid()}/task")


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.skipif(not (TASK / str(threading.get_native_id()) / "sched").exists(), reason="no /proc/.../sched")
def test_a_threads_run_time_is_read_to_well_under_a_tick():
    """Read, as the benchmark does, from another thread while the measured one sleeps (its time is settled)."""
    go, done, stop = threading.Event(), threading.Event(), threading.Event()
    spent: list[float] = []

    def work() -> None:
        go.wait()
        t0 = time.thread_time()
        _burn(0.003)  # less than one 10 ms tick: stat's sampled utime could read 0
        spent.append(time.thread_time() - t0)
        done.set()
        stop.wait()

    th = threading.Thread(target=work)
    th.start()
    try:
        time.sleep(0.05)
        task = TASK / str(th.native_id)
        before = _sched_runtime_s(task)
        go.set()
        assert done.wait(5)
        time.sleep(0.05)
        after = _sched_runtime_s(task)
    finally:
        stop.set()
        th.join()
    assert before is not None and after is not None
    assert (after - before) == pytest.approx(spent[0], abs=0.001)


def test_no_sched_file_means_none(tmp_path):
    assert _sched_runtime_s(tmp_path) is None
    (tmp_path / "sched").write_text("policy : 0\n")
    assert _sched_runtime_s(tmp_path) is None
