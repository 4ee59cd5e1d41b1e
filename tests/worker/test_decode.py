"""decode_message on real kombu messages: every malformed shape becomes an error row."""

from __future__ import annotations

import json
import pickle

from kombu.message import Message

from worker.batching import decode_message


def msg(body: bytes, content_type: str = "application/json", headers: dict | None = None) -> Message:
    return Message(
        body=body, content_type=content_type, content_encoding="utf-8",
        headers={"id": "tid-1", "task": "embedclf.classify"} if headers is None else headers,
        accept={"application/json"},
    )


def good_body(**kwargs) -> bytes:
    return json.dumps([[], kwargs, {"callbacks": None}]).encode()


def test_valid_protocol2_message():
    p = decode_message(msg(good_body(head="h", text="hello", request_id=7)), None, 100)
    assert p.error is None and p.request is not None
    assert (p.request.task_id, p.request.head, p.request.text, p.request.request_id) == ("tid-1", "h", "hello", "7")


def test_protocol1_message_body():
    body = json.dumps({"task": "embedclf.classify", "id": "tid-1", "args": [], "kwargs": {"head": "h", "text": "x"}})
    p = decode_message(msg(body.encode()), None, 100)
    assert p.request is not None and p.request.text == "x"


def test_invalid_payload_keeps_head_and_request_id():
    p = decode_message(msg(good_body(head="h", text="", request_id="r9")), None, 100)
    assert p.request is None
    assert p.error["task_id"] == "tid-1" and p.error["status"] == "error"
    assert p.error["error"] == "'text' is empty"
    assert p.error["head_name"] == "h" and p.error["request_id"] == "r9"


def test_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    body = pickle.dumps([[], {"head": "h", "text": Evil()}, {}])
    p = decode_message(msg(body, content_type="application/x-python-serialize"), None, 100)
    assert p.request is None and "not executed" in p.error["error"] and "JSON only" in p.error["error"]
    assert not marker.exists()


def test_garbage_json_and_wrong_shapes():
    for body, expected in [
        (b"{not json", "malformed message"),
        (json.dumps({"no": "kwargs"}).encode(), "not a Celery task body"),
        (json.dumps([1, 2]).encode(), "not a Celery task body"),
        (json.dumps([[], "kwargs-as-string", {}]).encode(), "kwargs must be an object"),
        (json.dumps([["h", "text"], {}, {}]).encode(), "positional arguments are not accepted"),
    ]:
        p = decode_message(msg(body), None, 100)
        assert p.request is None, body
        assert expected in p.error["error"], (body, p.error)


def test_message_without_id_still_gets_a_row():
    p = decode_message(msg(good_body(head="h", text="x"), headers={"task": "embedclf.classify"}), None, 100)
    assert p.error["task_id"].startswith("missing-id-") and p.error["error"] == "message has no task id"


def test_nul_in_task_id_is_cleaned():
    p = decode_message(msg(good_body(head="h", text="x"), headers={"id": "a\x00b"}), None, 100)
    assert "\x00" not in p.request.task_id


def test_oversized_body_is_refused_before_decoding():
    body = b"[" + b"x" * 5000  # not even JSON: decoding it would say "malformed message"
    p = decode_message(msg(body), None, 100, max_payload_bytes=4096)
    assert p.request is None and p.task_id == "tid-1"
    assert p.error["status"] == "error" and p.error["error"].startswith("payload is 5001 bytes (max 4096")
    small = decode_message(msg(good_body(head="h", text="hello")), None, 100, max_payload_bytes=4096)
    assert small.request is not None and small.request.text == "hello"
