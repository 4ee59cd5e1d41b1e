"""Redis restarts while tasks flow: the worker reconnects, keeps batching, and no task is lost."""

from __future__ import annotations

import threading
import time

import pytest

from embedclf.client import Client
from embedclf.config import Settings
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.store import repository as repo
from tests.conftest import settings_env
from tests.helpers import PersistentRedis, free_port, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def test_worker_survives_a_redis_restart(settings, clean_db, start_worker, tmp_path):
    server = PersistentRedis(free_port(), tmp_path)
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    try:
        head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
        repo.add_head_version(clean_db, "rr", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
        worker_settings = Settings(database_url=settings.database_url, broker_url=url, embedder="fake:32",
                                   visibility_timeout_s=10)
        worker = start_worker(settings_env(worker_settings, EMBEDCLF_VISIBILITY_TIMEOUT_S="10",
                                           EMBEDCLF_BATCH_MAX_WAIT_MS="200"), name="w-restart")
        worker.wait_ready()
        ids: list[str] = []
        stop = threading.Event()

        def stream() -> None:
            i = 0
            while not stop.is_set():
                try:
                    client = Client(url)
                    while not stop.is_set():
                        tid = f"rr-{i}"
                        client.classify_many("rr", [f"text {i}"], task_ids=[tid])
                        ids.append(tid)  # counted only once Redis accepted it
                        i += 1
                        time.sleep(0.01)
                except Exception:  # noqa: BLE001 - broker down: the producer retries, like a real app
                    time.sleep(0.2)

        producer = threading.Thread(target=stream, daemon=True)
        producer.start()
        time.sleep(3)
        server.stop()  # restart mid-flow (AOF keeps queued and unacked messages)
        time.sleep(1)
        server.start()
        restarted_at = len(ids)
        time.sleep(6)
        stop.set()
        producer.join(timeout=30)
        rows = wait_rows(clean_db, ids, worker, timeout=120)
        assert set(rows) == set(ids) and len(ids) > 200
        assert all(r["status"] == "ok" for r in rows.values())
        # tasks sent after the restart were served too: the worker reconnected and kept batching
        assert len(ids) - restarted_at > 100
        assert worker.alive(), worker.log()[-2000:]
        print(f"\nredis restart: {len(ids)} tasks, all {len(rows)} rows present, none duplicated")
    finally:
        server.stop()
