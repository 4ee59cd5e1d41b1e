"""Fixtures of the in-process pipeline tests (test_pipeline.py, test_warm_up.py)."""

from __future__ import annotations

import uuid

import pytest
import redis


@pytest.fixture
def queue(redis_url):
    name = f"pipe-{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(redis_url)
    yield name
    r.delete(name)
    for key in r.scan_iter("embedclf:*"):
        r.delete(key)
    r.close()


@pytest.fixture
def services():
    import gc
    import sys

    switch = sys.getswitchinterval()  # a started service sets its process's (EMBEDCLF_GIL_SWITCH_MS)
    thresholds = gc.get_threshold()  # and freezes its objects, with its own GC threshold (EMBEDCLF_GC_THRESHOLD)
    started: list = []  # worker.service.Service
    yield started
    for s in started:
        s.stop(timeout_s=5)
        s.res.close()
    sys.setswitchinterval(switch)
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == thresholds  # a stopped service restores them
