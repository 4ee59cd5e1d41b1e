"""The head refresher thread (worker/refresher.py) against a real Postgres."""

from __future__ import annotations

import time

import pytest

from embedclf.embedders.fake import FakeEmbedder
from tests.worker.test_resources import store_head
from worker.refresher import HeadRefresher
from worker.resources import HeadCache

pytestmark = pytest.mark.postgres


def test_the_refresher_loads_new_versions_on_its_own_thread(clean_db):
    """``HeadRefresher`` picks up an activated version without any snapshot call, and gives the polling back
    to the cache's readers when stopped."""
    emb = FakeEmbedder(32)
    store_head(clean_db, emb, epochs=2)
    cache = HeadCache(clean_db, refresh_s=0.2)
    assert cache.snapshot()["topics"].version == 1
    refresher = HeadRefresher(cache, interval_s=0.2)
    refresher.start()
    try:
        assert cache.background
        store_head(clean_db, emb, epochs=2)
        deadline = time.monotonic() + 10
        while cache.cached()["topics"].version != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cache.cached()["topics"].version == 2 and refresher.refreshes >= 1
        assert refresher.thread.is_alive()
    finally:
        refresher.stop()
    assert not refresher.thread.is_alive() and not cache.background
