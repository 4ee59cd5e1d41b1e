"""From a raw queue entry to a request or its error rows (no services needed)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from embedclf.envelope import encode, raw_task_id, sha1_task_id
from worker.inflight import Entry
from worker.intake import IntakeLimits, fingerprint, intake

LIMITS = IntakeLimits(max_payload_bytes=1 << 20, max_text_chars=100, max_texts=10, max_attempts=3)
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)


def entry(raw: bytes, deaths: int = 0) -> Entry:
    return Entry(tag=1, deaths=deaths, size=len(raw), raw=raw)


def run(kwargs: dict, task: str = "embedclf.classify", tid: str = "t1", deaths: int = 0, **headers):
    raw = encode(task, tid, kwargs, "celery", extra_headers=headers or None)
    return intake(entry(raw, deaths), LIMITS, NOW, count_tokens=lambda t: len(t.split()))


def test_a_valid_single_text_task():
    p = run({"head": "h", "text": "three word text", "request_id": "r"})
    assert p.request is not None and p.errors == [] and p.task_id == "t1"
    assert p.tokens == 3 and p.n_texts == 1 and p.fingerprint is not None
    assert p.summary == "{head='h', text=<15 chars>}"


def test_a_valid_texts_task_counts_texts_and_tokens():
    p = run({"heads": ["a", "b"], "texts": ["one two", "", "three"]})
    assert p.request.multi and p.n_texts == 3 and p.tokens == 3 and len(p.request.bad) == 1


@pytest.mark.parametrize("kwargs, headers, task, fragment, item, head", [
    ({"head": "h", "text": ""}, {}, "embedclf.classify", "'text' is empty", 0, "h"),
    ({"head": "h", "texts": "x"}, {}, "embedclf.classify", "'texts' must be a list", None, "h"),
    ({"head": "h", "text": "x"}, {}, "other.task", "unknown task 'other.task'", 0, "h"),
    ({"head": "h", "text": "x"}, {"expires": "2026-12-01T11:00:00+00:00"}, "embedclf.classify", "expired at", 0, "h"),
    ({"head": "h", "text": "x"}, {"eta": "2026-12-01T13:00:00+00:00"}, "embedclf.classify", "eta/countdown", 0, "h"),
])
def test_whole_task_errors(kwargs, headers, task, fragment, item, head):
    p = run(kwargs, task=task, **headers)
    assert p.request is None
    [row] = p.errors
    assert fragment in row["error"] and row["task_id"] == "t1" and row["item"] == item and row["head_name"] == head


def test_an_eta_in_the_past_or_a_future_expiry_is_fine():
    assert run({"head": "h", "text": "x"}, eta="2026-12-01T11:59:00+00:00",
               expires="2026-12-01T13:00:00+00:00").request is not None


def test_a_revoked_task_gets_an_error_row():
    raw = encode("embedclf.classify", "gone", {"head": "h", "text": "x"}, "celery")
    p = intake(entry(raw), LIMITS, NOW, revoked={"gone"})
    assert p.request is None and "revoked" in p.errors[0]["error"]


def test_a_task_that_killed_its_workers_gives_up_with_a_row_per_head():
    p = run({"heads": ["a", "b"], "text": "poison"}, deaths=3)
    assert p.request is None
    assert [(r["head_name"], r["item"]) for r in p.errors] == [("a", 0), ("b", 0)]
    assert all("gave up after 3 failed attempts" in r["error"] for r in p.errors)
    p = run({"head": "a", "texts": ["x", "y"]}, deaths=3)
    assert [(r["head_name"], r["item"]) for r in p.errors] == [("a", None)]
    assert run({"head": "a", "text": "x"}, deaths=2).request is not None  # not yet


def test_an_oversized_entry_is_answered_without_its_bytes():
    p = intake(Entry(tag=5, deaths=0, size=9_000_000, raw=None, sha1="ab" * 20), LIMITS, NOW)
    [row] = p.errors
    assert p.task_id == sha1_task_id("ab" * 20) and "message is 9000000 bytes" in row["error"]
    # the id is read from the message's last bytes (headers and properties) when it is there
    raw = encode("embedclf.classify", "big-one", {"head": "h", "text": "x" * 10_000}, "celery")
    p = intake(Entry(tag=6, deaths=0, size=len(raw), raw=None, sha1="cd" * 20, tail=raw[-4096:]), LIMITS, NOW)
    assert p.task_id == "big-one" and p.errors[0]["item"] is None
    tail = raw[-4096:].replace(b'"big-one"', b'"' + b"z" * 300 + b'"')  # unusable there: the deterministic id
    assert intake(Entry(7, 0, len(raw), None, "ef" * 20, tail), LIMITS, NOW).task_id == sha1_task_id("ef" * 20)


def test_a_malformed_entry_gets_one_row_under_its_deterministic_id():
    p = intake(entry(b"not json"), LIMITS, NOW)
    [row] = p.errors
    assert row["task_id"] == raw_task_id(b"not json") and row["item"] is None and row["head_name"] is None


def test_fingerprint_is_what_the_task_asks_not_when():
    a = {"head": "h", "text": "x", "enqueued_at": 1}
    assert fingerprint(a) == fingerprint({**a, "enqueued_at": 2})
    assert fingerprint(a) != fingerprint({**a, "text": "y"})
    assert fingerprint(a) != fingerprint({**a, "head": "g"})
    assert fingerprint({"head": "h", "texts": ["x"]}) != fingerprint({"head": "h", "text": "x"})
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert fingerprint({"text": deep}) is None and fingerprint("nope") is None
    assert json.dumps(fingerprint(a))  # a plain hex string
