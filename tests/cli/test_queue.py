"""``embedclf enqueue`` against a private redis-server: broker outages and the payload limit."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from click.testing import CliRunner

from embedclf.cli import cli
from tests.conftest import one_line_error
from tests.helpers import PersistentRedis, free_port, queued

pytestmark = [pytest.mark.redis]


def enqueue(port: int, path, *extra: str, env: dict | None = None):
    base = {"EMBEDCLF_BROKER_URL": f"redis://127.0.0.1:{port}/0",
            "EMBEDCLF_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}
    base.update(env or {})
    return CliRunner().invoke(cli, ["enqueue", "--head", "h", "--file", str(path), "--quiet", *extra], env=base,
                              catch_exceptions=False)


def test_enqueue_waits_for_a_broker_that_comes_up(tmp_path):
    server = PersistentRedis(free_port(), tmp_path)
    data = tmp_path / "texts.csv"
    data.write_text("text\n" + "".join(f"message {i}\n" for i in range(50)))
    threading.Timer(2.0, server.start).start()
    try:
        r = enqueue(server.port, data, "--ids-out", str(tmp_path / "ids.txt"), "--per-task", "1",
                    env={"EMBEDCLF_ENQUEUE_RETRY_S": "20"})
        assert r.exit_code == 0, r.output + r.stderr
        assert "enqueued 50 texts in 50 tasks" in r.output
        ids = [line.split("\t")[0] for line in (tmp_path / "ids.txt").read_text().splitlines()]
        counts = Counter(tid for tid, _, _ in queued(server.port))
        assert sorted(counts) == sorted(ids) and len(ids) == 50 and set(counts.values()) == {1}
    finally:
        time.sleep(0.1)
        server.stop()


def test_enqueue_fails_with_one_line_after_the_retry_bound(tmp_path):
    data = tmp_path / "texts.csv"
    data.write_text("text\nhello\n")
    t0 = time.monotonic()
    r = enqueue(free_port(), data, env={"EMBEDCLF_ENQUEUE_RETRY_S": "2"})
    assert 2 <= time.monotonic() - t0 < 6
    one_line_error(r, "cannot reach the broker", "unreachable for", "EMBEDCLF_ENQUEUE_RETRY_S", "redis-server")


def test_enqueue_refuses_an_oversized_payload_and_sends_nothing(tmp_path):
    server = PersistentRedis(free_port(), tmp_path)
    server.start()
    data = tmp_path / "texts.jsonl"
    data.write_text('{"text": "small"}\n' + '{"text": "' + "x" * 5000 + '"}\n')
    try:
        r = enqueue(server.port, data, env={"EMBEDCLF_MAX_PAYLOAD_BYTES": "4096"})
        one_line_error(r, "payload is", "(max 4096", "nothing was enqueued")
        assert queued(server.port) == []
    finally:
        server.stop()


def test_results_table_shows_abstentions():
    import datetime as dt

    from embedclf.cli.queue import format_table

    row = {"completed_at": dt.datetime(2026, 1, 1), "task_id": "t-1", "item": 0, "head_name": "support",
           "head_version": 2, "status": "ok",
           "label": None, "abstained": True, "score": 0.31, "error": None, "text": "what is the weather",
           "top3": [{"label": "billing", "score": 0.31}, {"label": "bug", "score": 0.2}, {"label": "x", "score": 0.1}]}
    line = format_table([row]).splitlines()[1]
    assert "(abstained)" in line and "billing 0.31" in line
    answered = format_table([row | {"label": "billing", "abstained": False}]).splitlines()[1]
    assert "(abstained)" not in answered and "billing" in answered
