"""Request bodies of POST /v1/classify: a Submission or a 4xx ApiError, never anything else (pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedclf.http.app import result_body
from embedclf.http.validate import DEFAULT_TIMEOUT_S, ApiError, is_json, parse_body


def parse(obj, max_text_chars: int = 100, max_texts: int = 5):
    return parse_body(json.dumps(obj).encode(), max_text_chars, max_texts)


def test_a_valid_body_becomes_a_submission():
    s = parse({"head": "a", "text": "hi", "request_id": 3})
    assert (s.head, s.texts, s.request_ids, s.multi, s.wait, s.timeout_s, s.single) == \
        ("a", ["hi"], [3], False, False, DEFAULT_TIMEOUT_S, True)
    m = parse({"heads": ["a", "b"], "texts": ["x", "y"], "request_ids": ["r", None], "wait": True, "timeout_s": 2})
    assert (m.head, m.texts, m.request_ids, m.multi, m.wait, m.timeout_s, m.single) == \
        (["a", "b"], ["x", "y"], ["r", None], True, True, 2.0, False)
    assert parse({"heads": ["a"], "text": "x"}).single and not parse({"heads": ["a", "b"], "text": "x"}).single


def test_limits_come_from_the_settings():
    with pytest.raises(ApiError, match="too long: 101 characters"):
        parse({"head": "a", "text": "x" * 101})
    with pytest.raises(ApiError, match="1 to 5 texts"):
        parse({"head": "a", "texts": ["x"] * 6})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
fields = st.sampled_from(["head", "heads", "text", "texts", "request_id", "request_ids", "wait", "timeout_s", "x"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(fields, json_values, max_size=6) | json_values)
def test_any_json_gives_a_submission_or_a_4xx(obj):
    try:
        s = parse(obj)
    except ApiError as exc:
        assert exc.status in (400, 422) and exc.body()["message"]
        json.dumps(exc.body())  # the error itself is JSON
    else:
        assert s.texts and all(isinstance(t, str) and t.strip() for t in s.texts)
        assert 0 < s.timeout_s <= 300 and isinstance(s.wait, bool)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_give_a_submission_or_a_4xx(raw):
    try:
        parse_body(raw, 100, 5)
    except ApiError as exc:
        assert exc.status in (400, 422)


def test_json_content_types():
    assert is_json("application/json") and is_json("Application/JSON; charset=utf-8")
    assert is_json("application/problem+json")
    assert not any(is_json(v) for v in (None, "", "text/plain", "application/jsonx", "text/json"))


def test_result_body_status_and_shape():
    ok = {"status": "ok", "label": "x", "item": 0, "head_name": "a"}
    err = {"status": "error", "error": "bad", "item": 1, "head_name": None}
    assert result_body("t", [ok], single=True)["result"]["label"] == "x"
    assert result_body("t", [ok], single=False)["result"][0]["label"] == "x"
    assert result_body("t", [err, ok], single=False)["status"] == "partial"
    assert result_body("t", [ok], single=True)["status"] == "ok"
    assert result_body("t", [{**err, "item": None}], single=True)["status"] == "error"
