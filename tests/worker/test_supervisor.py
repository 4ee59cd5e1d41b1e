"""The parent of ``embedclf worker --processes N``: restarts, clean exits, giving up, stopping. Real processes
(small Python programs standing in for workers); the whole command on real workers is in tests/cli."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from worker.supervisor import Supervisor, describe_status, worker_names

#: a stand-in worker: writes its pid to DIR/<slot>.<pid>, then sleeps (or exits with EXIT when set)
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    d, slot, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(os.path.join(d, f"{slot}.{os.getpid()}"), "w").close()
    if mode.startswith("exit"):
        sys.exit(int(mode[4:]))
    while True:
        time.sleep(0.05)
""")


def started(d: Path, slot: int) -> list[int]:
    return sorted(int(p.suffix[1:]) for p in d.glob(f"{slot}.*"))


def wait_for(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def make(tmp_path: Path, n: int, modes: dict[int, str] | None = None, **kw) -> Supervisor:
    modes = modes or {}
    return Supervisor(n, lambda i: [sys.executable, "-c", CHILD, str(tmp_path), str(i), modes.get(i, "run")],
                      lambda i: dict(os.environ), poll_s=0.02, **kw)


def in_thread(sup: Supervisor) -> tuple[threading.Thread, list[int]]:
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(sup.run()), daemon=True)
    t.start()
    return t, out


def test_a_killed_worker_is_restarted_and_stop_ends_every_worker(tmp_path):
    sup = make(tmp_path, 2, backoff_s=(0.05, 1.0))
    t, out = in_thread(sup)
    wait_for(lambda: started(tmp_path, 0) and started(tmp_path, 1))
    (victim,), (other,) = started(tmp_path, 0), started(tmp_path, 1)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(started(tmp_path, 0)) == 2)
    replacement = [p for p in started(tmp_path, 0) if p != victim][0]
    assert alive(replacement) and alive(other) and sup.restarts == 1
    assert started(tmp_path, 1) == [other]  # the other worker was left alone
    sup.request_stop()
    t.join(30)
    assert out == [0]
    assert not alive(replacement) and not alive(other)


def test_workers_that_exit_cleanly_are_not_replaced(tmp_path):
    sup = make(tmp_path, 2, modes={0: "exit0", 1: "exit0"})
    t, out = in_thread(sup)
    t.join(30)
    assert out == [0] and sup.restarts == 0
    assert len(started(tmp_path, 0)) == 1 and len(started(tmp_path, 1)) == 1


def test_a_worker_failing_at_start_stops_all_with_its_status(tmp_path):
    sup = make(tmp_path, 2, modes={0: "exit3"}, backoff_s=(0.01, 0.05), max_quick_fails=3, min_uptime_s=30)
    t, out = in_thread(sup)
    t.join(30)
    assert out == [3]
    assert len(started(tmp_path, 0)) == 3  # tried three times, then gave up
    assert not any(alive(p) for p in started(tmp_path, 1))  # and stopped the healthy one


def test_a_worker_ignoring_sigterm_is_killed_after_the_stop_timeout(tmp_path):
    sup = make(tmp_path, 1, modes={0: "ignore-term"}, stop_timeout_s=0.5)
    t, out = in_thread(sup)
    wait_for(lambda: started(tmp_path, 0))
    t0 = time.monotonic()
    sup.request_stop()
    t.join(30)
    assert out == [0] and 0.4 < time.monotonic() - t0 < 10
    assert not alive(started(tmp_path, 0)[0])


def test_workers_die_with_a_killed_supervisor(tmp_path):
    """kill -9 of the parent: the kernel sends each child SIGTERM (no orphaned workers holding messages)."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from worker.supervisor import Supervisor
        child = {CHILD!r}
        Supervisor(2, lambda i: [sys.executable, "-c", child, {str(tmp_path)!r}, str(i), "run"],
                   lambda i: dict(os.environ)).run()
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        wait_for(lambda: started(tmp_path, 0) and started(tmp_path, 1))
        pids = started(tmp_path, 0) + started(tmp_path, 1)
        assert all(alive(p) for p in pids)
        parent.kill()
        parent.wait(10)
        wait_for(lambda: not any(alive(p) for p in pids))
    finally:
        parent.kill()


@pytest.mark.parametrize(("args", "rest", "names"), [
    (["--loglevel", "INFO"], ["--loglevel", "INFO"], ["embedclf-0@%h", "embedclf-1@%h"]),
    (["-n", "gpu@box", "-E"], ["-E"], ["gpu-0@box", "gpu-1@box"]),
    (["--hostname=w1", "--without-gossip"], ["--without-gossip"], ["w1-0", "w1-1"]),
    (["--hostname", "a@%h"], [], ["a-0@%h", "a-1@%h"]),
])
def test_each_worker_gets_its_own_node_name(args, rest, names):
    assert worker_names(args, 2) == (rest, names)


def test_describe_status():
    assert describe_status(3) == "exit status 3"
    assert describe_status(-9) == "killed by SIGKILL"
