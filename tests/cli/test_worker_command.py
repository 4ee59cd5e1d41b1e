"""`embedclf worker` starts the same Celery worker, which serves tasks and stops on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.store import repository as repo
from tests.conftest import ROOT, settings_env
from tests.helpers import forget_workers, produce, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


class CliWorker:
    def __init__(self, env: dict, log: Path, *extra: str) -> None:
        self.log_path = log
        self._log = log.open("w")
        script = Path(sys.executable).with_name("embedclf")  # the installed console script
        self.proc = subprocess.Popen([str(script), "worker", "--loglevel", "INFO", *extra,
                                      "--without-gossip", "--without-mingle"],
                                     cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


def test_embedclf_worker_serves_and_stops_cleanly(settings, clean_db, tmp_path):
    head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
    repo.add_head_version(clean_db, "tiny", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
    worker = CliWorker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32"), tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 120
        while " ready." not in worker.log():
            assert worker.alive() and time.monotonic() < deadline, worker.log()[-2000:]
            time.sleep(0.2)
        assert "solo" in worker.log()  # the pool the CLI asks for
        produce(settings.broker_url, [{"id": "cli-w-1", "kwargs": {"head": "tiny", "text": "hello"}}], tmp_path)
        row = wait_rows(clean_db, ["cli-w-1"], worker, timeout=60)["cli-w-1"]
        assert row["status"] == "ok" and row["label"] in {"x", "y"} and row["embedder_id"] == "fake:32"
    finally:
        worker.proc.send_signal(signal.SIGTERM)
        rc = worker.proc.wait(timeout=60)
        worker._log.close()
    assert rc == 0, worker.log()[-2000:]


def _started(log: str) -> dict[int, list[int]]:
    """The supervisor's ``worker I started (pid P)`` lines: slot -> pids in order."""
    out: dict[int, list[int]] = {}
    for slot, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", log):
        out.setdefault(int(slot), []).append(int(pid))
    return out


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_embedclf_worker_processes_serves_restarts_and_stops(settings, clean_db, tmp_path):
    """`embedclf worker --processes 2`: two whole workers under one parent; a kill -9'd one comes back; SIGTERM
    stops both cleanly."""
    head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
    repo.add_head_version(clean_db, "tiny", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
    worker = CliWorker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32"), tmp_path / "worker.log",
                       "--processes", "2")
    try:
        def wait_ready(n: int) -> None:
            deadline = time.monotonic() + 120
            while worker.log().count(" ready.") < n:
                assert worker.alive() and time.monotonic() < deadline, worker.log()[-3000:]
                time.sleep(0.2)

        wait_ready(2)
        log = worker.log()
        assert "embedclf-0@" in log and "embedclf-1@" in log  # distinct node names
        first = _started(log)
        assert sorted(first) == [0, 1] and all(len(p) == 1 for p in first.values())
        produce(settings.broker_url, [{"id": f"proc-{i}", "kwargs": {"head": "tiny", "text": f"t {i}"}}
                                      for i in range(40)], tmp_path)
        rows = wait_rows(clean_db, [f"proc-{i}" for i in range(40)], worker, timeout=60)
        assert all(r["status"] == "ok" for r in rows.values())
        assert {r["worker"].split(":")[1] for r in rows.values()} <= {str(p[0]) for p in first.values()}

        victim = first[0][0]
        os.kill(victim, signal.SIGKILL)
        wait_ready(3)  # slot 0 again, in a new process
        again = _started(worker.log())
        assert len(again[0]) == 2 and again[0][1] != victim and again[1] == first[1]
        assert "killed by SIGKILL" in worker.log()
        produce(settings.broker_url, [{"id": "proc-after", "kwargs": {"head": "tiny", "text": "after"}}], tmp_path)
        assert wait_rows(clean_db, ["proc-after"], worker, timeout=60)["proc-after"]["status"] == "ok"
    finally:
        worker.proc.send_signal(signal.SIGTERM)
        rc = worker.proc.wait(timeout=120)
        worker._log.close()
        forget_workers(settings.broker_url)  # the killed process's records (no live worker reaps them now)
    assert rc == 0, worker.log()[-3000:]
    assert all(_gone(p) for pids in _started(worker.log()).values() for p in pids)
