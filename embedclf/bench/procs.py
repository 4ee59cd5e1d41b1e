"""Worker and producer subprocesses for ``bench e2e``."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from embedclf.bench import BenchError

#: celery logs "<name> ready." at INFO only, so the workers run at INFO (a WARNING level hides it);
#: embedclf's own loggers follow EMBEDCLF_LOG_LEVEL and log per batch at DEBUG only
WORKER_ARGS = ("-m", "celery", "-A", "worker.app", "worker", "--pool", "solo", "--loglevel", "INFO",
               "--without-gossip", "--without-mingle", "--without-heartbeat")

# Runs in its own interpreter, like another application would: embedclf.client only.
PRODUCER = r"""
import json, sys, time
from embedclf.client import Client
broker, queue, head, path, rate, per_task = sys.argv[1:7]
texts = json.load(open(path, encoding="utf-8"))
rate, per_task = float(rate), int(per_task)
client = Client(broker, queue)
client.wait_for_broker()  # connected before the clock starts, as a running application's client is
start = time.time()
if rate > 0:  # one task at a time, on a fixed schedule: low-load latency
    t0 = time.monotonic()
    for i, text in enumerate(texts):
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        client.classify(head, text)
else:
    client.classify_many(head, texts, per_task=per_task)
end = time.time()
client.close()
print(json.dumps({"start": start, "end": end, "sent": len(texts)}), flush=True)
"""


def project_root() -> Path:
    """Directory holding the ``worker`` package (celery's ``-A worker.app`` imports it from the cwd).

    The checkout of the ``embedclf`` package in use comes first: a ``worker`` found on ``sys.path``
    can be another package of that name (pytest puts ``tests/`` first, which has ``tests/worker``),
    and then the worker would import ``embedclf`` from wherever the installed package points.
    """
    import embedclf

    checkout = Path(embedclf.__file__).resolve().parent.parent
    if (checkout / "worker" / "app.py").is_file():
        return checkout
    spec = importlib.util.find_spec("worker")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("the `worker` package is not importable; run from the embedclf checkout")
    return Path(list(spec.submodule_search_locations)[0]).resolve().parent


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


class ChildProc:
    """A benchmark's child process logging to a file: liveness, peak memory, polite stop."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(list(argv), cwd=project_root(), env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_rss_mb(self) -> float | None:
        """High-water resident set size (VmHWM) from /proc, in MB; None if unreadable."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # reported in kB
        except (OSError, ValueError, IndexError):
            pass
        return None

    def thread_cpu_s(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of the worker's threads, summed by OS thread name; {} if unreadable.

        The worker names its own threads (``ec-receive``, ``ec-batch``, ``ec-write-N``...); the model's
        compute threads keep the names their runtime gives them. Read from ``/proc/…/task/<tid>/sched``
        (the scheduler's own run time, to the nanosecond) where the kernel has it, else from ``stat``,
        which counts 10 ms ticks by sampling: a thread with a few ms of work a round may read 0 there.
        """
        out: dict[str, float] = {}
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        try:
            tasks = list(Path(f"/proc/{self.pid}/task").iterdir())
        except OSError:
            return out
        for task in tasks:
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue  # the thread ended meanwhile
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            seconds = _sched_runtime_s(task)
            if seconds is None:
                fields = stat[stat.rindex(")") + 2 :].split()
                seconds = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            out[name] = out.get(name, 0.0) + seconds
        return out

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (Celery's warm shutdown), then SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class WorkerProc(ChildProc):
    """One ``celery -A worker.app worker`` subprocess, logging to a file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, app: str = "worker.app",
                 extra_args: Sequence[str] = (), metrics_port: int = 0) -> None:
        self.name = name
        #: the worker's metrics port (0: none), read by :meth:`metric_sums`
        self.metrics_port = metrics_port
        if metrics_port:
            env = {**env, "EMBEDCLF_METRICS_PORT": str(metrics_port)}
        args = [a if a != "worker.app" else app for a in WORKER_ARGS]
        super().__init__([sys.executable, *args, *extra_args, "-n", f"{name}@%h"], env, log_dir / f"{name}.log")
        self.ready_after_s: float | None = None

    def metric_sums(self) -> dict[str, float]:
        """The ``*_sum`` and ``*_count`` series of the worker's histograms (``{}`` without a metrics port)."""
        if not self.metrics_port:
            return {}
        from urllib.request import urlopen

        try:
            with urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:  # noqa: S310 - loopback
                body = r.read().decode()
        except OSError:
            return {}
        return parse_sums(body)

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"worker {self.name} exited with code {self.proc.returncode}: {last_line(self.log())} "
                             f"(log: {self.log_path})")

    def is_ready(self) -> bool:
        if self.ready_after_s is None and " ready." in self.log():
            self.ready_after_s = time.monotonic() - self.started
        return self.ready_after_s is not None


def parse_sums(body: str) -> dict[str, float]:
    """``name -> value`` of the unlabelled ``*_sum`` / ``*_count`` lines of a Prometheus text page."""
    out: dict[str, float] = {}
    for line in body.splitlines():
        name, _, value = line.partition(" ")
        if name.endswith(("_sum", "_count")) and "{" not in name:
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


def free_port() -> int:
    """A TCP port free on the loopback right now (the caller binds it soon after)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(workers: Sequence[WorkerProc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(w.is_ready() for w in workers):
        for w in workers:
            w.check_alive()
        if time.monotonic() > deadline:
            late = ", ".join(w.name for w in workers if not w.is_ready())
            raise BenchError(f"worker(s) {late} not ready after {timeout:.0f}s (logs: {workers[0].log_path.parent})")
        time.sleep(0.1)


class Producer:
    """A separate process that enqueues the texts with ``Client.classify_many`` in tasks of
    ``per_task`` texts (as fast as it can), or one by one at ``rate`` tasks/s when ``rate`` > 0."""

    def __init__(self, broker_url: str, queue: str, head: str, texts: Sequence[str], work_dir: Path,
                 env: dict[str, str], rate: float = 0.0, per_task: int = 1) -> None:
        path = work_dir / "texts.json"
        path.write_text(json.dumps(list(texts)), encoding="utf-8")
        self.out_path = work_dir / "producer.out"
        self.err_path = work_dir / "producer.err"
        self._out, self._err = self.out_path.open("w"), self.err_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-c", PRODUCER, broker_url, queue, head, str(path),
                                      str(rate), str(per_task)],
                                     cwd=project_root(), env=env, stdout=self._out, stderr=self._err)

    def check(self) -> None:
        """Raise if the producer failed."""
        rc = self.proc.poll()
        if rc not in (None, 0):
            raise BenchError(f"producer exited with code {rc}: {last_line(self.err_path.read_text(errors='replace'))}")

    def result(self, timeout: float = 600) -> dict:
        """``{"start", "end", "sent"}`` (Unix times of the first and after the last send)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise BenchError(f"producer still sending after {timeout:.0f}s") from None
        self.check()
        self._out.close()
        self._err.close()
        return json.loads(last_line(self.out_path.read_text()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._err.close()


def subprocess_env(overrides: dict[str, str]) -> dict[str, str]:
    """This environment without any EMBEDCLF_* variable, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDCLF_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def _sched_runtime_s(task: Path) -> float | None:
    """A thread's run time in seconds from ``sched`` (``se.sum_exec_runtime``, in ms); None where unavailable."""
    try:
        with (task / "sched").open() as f:
            for line in f:
                if line.startswith("se.sum_exec_runtime"):
                    return float(line.split(":", 1)[1]) / 1000.0
    except (OSError, ValueError):
        return None
    return None


#: a backend's process and its row in ``pg_stat_activity`` must have started within this many seconds
_START_TOLERANCE_S = 2.0


def server_cpu_s(engine) -> dict[int, float] | None:
    """CPU seconds so far of each Postgres backend connected to ``engine``'s database, by pid (the workers'
    writes, this process's own polls); None where the server's processes cannot be read from here.

    A backend counts only if ``/proc/<pid>`` is a ``postgres`` process that started when
    ``pg_stat_activity`` says it did: a server in a container or on another host reports pids of another
    namespace, which must not be read as whatever local process has that number. Run time from ``sched``
    (to the nanosecond), else ``stat``'s ticks. A backend that exits between two readings takes its time
    with it (the workers keep their connections open)."""
    from sqlalchemy import text

    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT pid, extract(epoch FROM backend_start) FROM pg_stat_activity "
                "WHERE datname = current_database() AND backend_type = 'client backend'")).all()
        boot = _boot_time_s()
        tick = os.sysconf("SC_CLK_TCK")
    except Exception:  # noqa: BLE001 - a diagnostic: no figure rather than a failed benchmark
        return None
    out: dict[int, float] = {}
    for pid, started in rows:
        proc = Path(f"/proc/{pid}")
        try:
            if (proc / "comm").read_text().strip() != "postgres":
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile, or not ours to read
        if boot is None or abs(boot + int(fields[19]) / tick - float(started)) > _START_TOLERANCE_S:
            continue  # fields[19]: start time in ticks after boot
        seconds = _sched_runtime_s(proc)
        out[int(pid)] = seconds if seconds is not None else (int(fields[11]) + int(fields[12])) / tick
    return out or None


def server_cpu_delta(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    """Seconds the backends spent between two :func:`server_cpu_s` readings (a backend new since ``before``
    counts from its start); None when either reading is missing."""
    if before is None or after is None:
        return None
    return sum(s - before.get(pid, 0.0) for pid, s in after.items())


def _boot_time_s() -> float | None:
    """When the host booted, in epoch seconds: from ``/proc/uptime`` (to 10 ms), else ``btime`` (whole seconds:
    up to 1 s early, which ate half of :data:`_START_TOLERANCE_S`)."""
    try:
        return time.time() - float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError):
        return None
    return None
