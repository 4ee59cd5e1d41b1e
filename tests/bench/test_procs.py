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


@pytest.mark.postgres
def test_the_database_servers_backends_cpu_is_read_per_backend(engine):
    """The test's Postgres runs on this host: a query's CPU shows on its own backend, to well under a tick."""
    from sqlalchemy import text

    from embedclf.bench import procs

    if procs.server_cpu_s(engine) is None:
        pytest.skip("the test's Postgres does not run on this host (a container?): its processes cannot be read")
    with engine.connect() as conn:  # held open: its backend lives across both readings
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        before = procs.server_cpu_s(engine)
        t0 = time.perf_counter()
        conn.execute(text("SELECT count(*) FROM generate_series(1, 2000000)")).scalar_one()
        wall = time.perf_counter() - t0
        after = procs.server_cpu_s(engine)
    assert before is not None and after is not None and pid in before and pid in after
    spent = after[pid] - before[pid]
    # the backend computed the count (≈ 0.17 s of CPU here; a loaded host stretches the wall time, not the CPU),
    # and a single-threaded backend cannot spend more than the wall time
    assert 0.02 < spent <= wall + 0.005
    assert procs.server_cpu_delta(before, after) >= spent
    # a backend the first reading did not see counts from its start; no reading, no figure
    assert procs.server_cpu_delta({}, {pid: 0.25}) == 0.25
    assert procs.server_cpu_delta(None, after) is None and procs.server_cpu_delta(before, None) is None


@pytest.mark.postgres
def test_pids_of_another_namespace_are_not_read_as_local_processes(engine, monkeypatch):
    """A server in a container reports its own pids: a local process with that number started at another time."""
    from embedclf.bench import procs

    if procs.server_cpu_s(engine) is None:
        pytest.skip("the test's Postgres does not run on this host (a container?): its processes cannot be read")
    boot = procs._boot_time_s()
    assert boot is not None
    monkeypatch.setattr(procs, "_boot_time_s", lambda: boot + 3600.0)  # every process "started" an hour later
    assert procs.server_cpu_s(engine) is None
