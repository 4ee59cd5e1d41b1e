"""`embedclf worker` starts the same Celery worker, which serves tasks and stops on SIGTERM."""

from __future__ import annotations

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
from tests.helpers import produce, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


class CliWorker:
    def __init__(self, env: dict, log: Path) -> None:
        self.log_path = log
        self._log = log.open("w")
        script = Path(sys.executable).with_name("embedclf")  # the installed console script
        self.proc = subprocess.Popen([str(script), "worker", "--loglevel", "INFO",
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
