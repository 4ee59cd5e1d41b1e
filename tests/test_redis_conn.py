"""The Redis clients the worker and the client make: replies parsed in C (hiredis), and parsed right."""

from __future__ import annotations

import uuid

import pytest

from embedclf.redis_conn import redis_client

pytestmark = pytest.mark.redis


def test_replies_are_parsed_by_hiredis_and_a_batch_of_binary_messages_comes_back_intact(redis_url):
    """The receive thread's round trip returns up to hundreds of messages in one array reply: redis-py parses
    that in pure Python unless hiredis is installed (the worker extra installs it; 48 against 39 µs of the
    receive thread a single-text task measured). The reply must be the same either way, bytes included."""
    client = redis_client(redis_url)
    key = f"embedclf-test-hiredis-{uuid.uuid4()}"
    messages = [bytes([i % 256]) * (i + 1) + b"\x00\xff{\"a\": 1}" for i in range(300)]
    try:
        client.rpush(key, *messages)
        got = client.eval("return redis.call('LRANGE', KEYS[1], 0, -1)", 1, key)
        conn = client.connection_pool.get_connection()
        try:
            parser = type(conn._parser).__name__
        finally:
            client.connection_pool.release(conn)
    finally:
        client.delete(key)
        client.close()
    assert got == messages
    assert parser == "_HiredisParser", f"redis-py parses replies with {parser}: is hiredis installed?"
