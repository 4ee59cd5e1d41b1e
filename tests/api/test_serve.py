"""``embedclf serve``: the real command in a subprocess answers, serves a worker's results, and stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from embedclf.cli.serve import is_loopback
from tests.conftest import settings_env
from tests.helpers import free_port


def test_is_loopback():
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_serve_command_runs_and_stops_on_sigterm(settings, active_heads, tmp_path):
    port = free_port()
    env = settings_env(settings, EMBEDCLF_API_TOKEN="serve-test-token", EMBEDCLF_QUEUE="http-serve-cmd")
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "embedclf", "serve", "--port", str(port), "--no-access-log"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "embedclf serve not ready after 60s"
            time.sleep(0.2)
        r = httpx.get(f"http://127.0.0.1:{port}/v1/heads", timeout=10,
                      headers={"authorization": "Bearer serve-test-token"})
        assert r.status_code == 200 and [h["name"] for h in r.json()["heads"]] == ["other", "tiny"]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/heads", timeout=10).status_code == 401
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its shutdown
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in text and "serve-test-token" not in text
    assert "Application shutdown complete" in text  # the lifespan's close ran: a graceful stop
