"""Validation of the ``embedclf.classify`` task payload."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from embedclf.payload import (
    MAX_HEAD_NAME,
    MAX_ID_CHARS,
    ClassifyRequest,
    PayloadError,
    clean_str,
    parse_request,
    salvage,
)

MAX = 50


def parse(kwargs, args=(), max_text_chars=MAX) -> ClassifyRequest:
    return parse_request("task-1", args, kwargs, max_text_chars)


def ok(**extra) -> dict:
    return {"head": "support", "text": "my invoice is wrong"} | extra


# --- valid payloads -----------------------------------------------------------------


def test_minimal_valid_payload():
    r = parse(ok())
    assert r == ClassifyRequest(task_id="task-1", head="support", text="my invoice is wrong")
    assert r.request_id is None and r.enqueued_at is None


@pytest.mark.parametrize("args", [(), [], None])
def test_empty_positional_args_accepted(args):
    assert parse(ok(), args=args).text == "my invoice is wrong"


@pytest.mark.parametrize("rid, expected", [(42, "42"), (0, "0"), (-7, "-7"), ("abc-123", "abc-123"), ("", "")])
def test_request_id_normalised_to_str(rid, expected):
    assert parse(ok(request_id=rid)).request_id == expected


def test_request_id_at_max_length_accepted():
    assert parse(ok(request_id="r" * MAX_ID_CHARS)).request_id == "r" * MAX_ID_CHARS


@pytest.mark.parametrize("ts", [1_700_000_000, 1_700_000_000.25, 0])
def test_enqueued_at_becomes_aware_utc_datetime(ts):
    r = parse(ok(enqueued_at=ts))
    assert isinstance(r.enqueued_at, dt.datetime)
    assert r.enqueued_at.tzinfo is not None
    assert r.enqueued_at.utcoffset() == dt.timedelta(0)
    assert r.enqueued_at.timestamp() == pytest.approx(ts)


def test_explicit_none_optionals_accepted():
    r = parse(ok(request_id=None, enqueued_at=None))
    assert r.request_id is None and r.enqueued_at is None


def test_text_at_max_length_and_unicode_accepted():
    text = "é" * (MAX - 2) + "😀中"
    assert len(text) == MAX
    assert parse(ok(text=text)).text == text


def test_text_kept_verbatim_including_surrounding_whitespace():
    assert parse(ok(text="  padded\n")).text == "  padded\n"


def test_payload_survives_json_roundtrip():
    kwargs = json.loads(json.dumps(ok(request_id=5, enqueued_at=1.5)))
    r = parse(kwargs)
    assert r.request_id == "5"
    assert r.enqueued_at == dt.datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=dt.timezone.utc)


# --- invalid payloads: each names its problem --------------------------------------------

INVALID = [
    pytest.param(ok(), ("text",), r"positional", id="positional-args"),
    pytest.param(["support", "text"], (), r"kwargs must be an object, got list", id="kwargs-list"),
    pytest.param(None, (), r"kwargs must be an object, got NoneType", id="kwargs-none"),
    pytest.param("head=x", (), r"kwargs must be an object, got str", id="kwargs-str"),
    pytest.param({"text": "hi"}, (), r"missing required field\(s\): head$", id="missing-head"),
    pytest.param({"head": "h"}, (), r"missing required field\(s\): text$", id="missing-text"),
    pytest.param({}, (), r"missing required field\(s\): head, text", id="missing-both"),
    pytest.param(ok(foo=1, bar=2), (), r"unexpected field\(s\): bar, foo", id="extra-fields"),
    pytest.param(ok(text=123), (), r"'text' must be a string, got int", id="text-int"),
    pytest.param(ok(text=None), (), r"'text' must be a string, got NoneType", id="text-none"),
    pytest.param(ok(text=["a"]), (), r"'text' must be a string, got list", id="text-list"),
    pytest.param(ok(text=b"bytes"), (), r"'text' must be a string, got bytes", id="text-bytes"),
    pytest.param(ok(text=""), (), r"'text' is empty", id="text-empty"),
    pytest.param(ok(text=" \n\t "), (), r"'text' is empty", id="text-whitespace"),
    pytest.param(ok(text="ab\x00cd"), (), r"'text' contains a NUL byte at position 2", id="text-nul"),
    pytest.param(
        ok(text="ab\ud800"), (), r"'text' is not valid Unicode \(lone surrogate at position 2\)", id="text-surrogate"
    ),
    pytest.param(
        ok(text="x" * (MAX + 1)), (), rf"'text' is too long: {MAX + 1} characters \(max {MAX}\)", id="text-too-long"
    ),
    pytest.param(ok(head=5), (), r"'head' must be a non-empty string", id="head-int"),
    pytest.param(ok(head=""), (), r"'head' must be a non-empty string", id="head-empty"),
    pytest.param(ok(head="   "), (), r"'head' must be a non-empty string", id="head-whitespace"),
    pytest.param(ok(head="h" * (MAX_HEAD_NAME + 1)), (), r"'head' is not a valid head name", id="head-too-long"),
    pytest.param(ok(head="he\x00ad"), (), r"'head' is not a valid head name", id="head-nul"),
    pytest.param(ok(head="he\udcffad"), (), r"'head' is not valid Unicode", id="head-surrogate"),
    pytest.param(ok(request_id=1.5), (), r"'request_id' must be a string or integer, got float", id="rid-float"),
    pytest.param(ok(request_id=True), (), r"'request_id' must be a string or integer, got bool", id="rid-bool-true"),
    pytest.param(ok(request_id=False), (), r"'request_id' must be a string or integer, got bool", id="rid-bool-false"),
    pytest.param(ok(request_id=[1]), (), r"'request_id' must be a string or integer, got list", id="rid-list"),
    pytest.param(ok(request_id={"a": 1}), (), r"'request_id' must be a string or integer, got dict", id="rid-dict"),
    pytest.param(
        ok(request_id="r" * (MAX_ID_CHARS + 1)), (), rf"'request_id' is longer than {MAX_ID_CHARS}", id="rid-too-long"
    ),
    pytest.param(ok(request_id=10**300), (), r"'request_id' is longer than", id="rid-huge-int"),
    pytest.param(ok(request_id="a\x00b"), (), r"'request_id' contains a NUL byte", id="rid-nul"),
    pytest.param(ok(request_id="a\ud800"), (), r"'request_id' is not valid Unicode", id="rid-surrogate"),
    pytest.param(ok(enqueued_at=float("nan")), (), r"'enqueued_at' must be a Unix timestamp", id="ts-nan"),
    pytest.param(ok(enqueued_at=float("inf")), (), r"'enqueued_at' must be a Unix timestamp", id="ts-inf"),
    pytest.param(ok(enqueued_at=float("-inf")), (), r"'enqueued_at' must be a Unix timestamp", id="ts-minus-inf"),
    pytest.param(ok(enqueued_at="1700000000"), (), r"'enqueued_at' must be a Unix timestamp", id="ts-str"),
    pytest.param(ok(enqueued_at=True), (), r"'enqueued_at' must be a Unix timestamp", id="ts-bool"),
    pytest.param(ok(enqueued_at=1e300), (), r"'enqueued_at' is out of range", id="ts-huge-float"),
    pytest.param(ok(enqueued_at=-1e300), (), r"'enqueued_at' is out of range", id="ts-huge-negative"),
    pytest.param(ok(enqueued_at=10**20), (), r"'enqueued_at' is out of range", id="ts-huge-int"),
    # a 400-digit integer is valid JSON (json.loads parses it) and too big for a float
    pytest.param(ok(enqueued_at=10**400), (), r"'enqueued_at' is out of range", id="ts-int-beyond-float"),
]


@pytest.mark.parametrize("kwargs, args, message", INVALID)
def test_invalid_payload_raises_named_error(kwargs, args, message):
    with pytest.raises(PayloadError, match=message):
        parse(kwargs, args=args)


def test_huge_json_integer_timestamp_is_a_payload_error():
    kwargs = json.loads('{"head": "h", "text": "t", "enqueued_at": 1' + "0" * 400 + "}")
    with pytest.raises(PayloadError):
        parse(kwargs)


def test_payload_error_is_value_error():
    assert issubclass(PayloadError, ValueError)


def test_error_messages_are_short_and_storable():
    # a gigantic bad value must not be echoed back in full
    with pytest.raises(PayloadError) as info:
        parse(ok(enqueued_at="9" * 10_000))
    assert len(str(info.value)) < 200
    with pytest.raises(PayloadError) as info:
        parse(ok(**{"bad\x00key\ud800": 1}))
    msg = str(info.value)
    assert "\x00" not in msg
    msg.encode("utf-8")  # no lone surrogates


# --- clean_str / salvage -------------------------------------------------------------------


def test_clean_str_removes_nul_and_surrogates():
    s = clean_str("a\x00b\ud800c")
    assert "\x00" not in s
    s.encode("utf-8")  # would raise on a lone surrogate
    assert s.startswith("a") and s.endswith("c") and "b" in s


def test_clean_str_leaves_normal_text_alone():
    text = "plain text, émojis 😀 and 中文"
    assert clean_str(text) == text


def test_clean_str_bounds_length():
    s = clean_str("x" * 1000, limit=20)
    assert len(s) == 20 and s.endswith("...")
    assert clean_str("x" * 20, limit=20) == "x" * 20
    # escaping can lengthen the string; the bound still holds
    assert len(clean_str("\x00" * 100, limit=30)) == 30


def test_salvage_recovers_what_it_can():
    assert salvage({"head": "support", "request_id": 7, "text": None}) == {
        "item": 0, "head_name": "support", "request_id": "7", "enqueued_at": None}
    assert salvage({"head": "sup\x00port", "request_id": "r\ud800"}) == {
        "item": 0,
        "head_name": clean_str("sup\x00port"),
        "request_id": clean_str("r\ud800"),
        "enqueued_at": None,
    }
    got = salvage({"head": "h", "text": "", "enqueued_at": 1_700_000_000})
    assert got["enqueued_at"] == dt.datetime.fromtimestamp(1_700_000_000, tz=dt.timezone.utc)
    assert salvage({"head": "h", "enqueued_at": "yesterday"})["enqueued_at"] is None


@pytest.mark.parametrize(
    "kwargs",
    [None, ["head"], "head", {"head": 3, "request_id": True}, {"head": None, "request_id": 1.5}, {}],
)
def test_salvage_never_raises_and_drops_unusable_values(kwargs):
    out = salvage(kwargs)
    assert out == {"item": None if not isinstance(kwargs, dict) else 0, "head_name": None, "request_id": None,
                   "enqueued_at": None}


def test_salvage_of_a_texts_task_answers_for_the_whole_task():
    assert salvage({"head": "h", "texts": "not a list"})["item"] is None


def test_salvage_bounds_lengths():
    out = salvage({"head": "h" * 10_000, "request_id": "r" * 10_000})
    assert len(out["head_name"]) == MAX_HEAD_NAME
    assert len(out["request_id"]) == MAX_ID_CHARS


# --- several heads, one embedding -----------------------------------------------------


def test_heads_list_is_an_alternative_to_head():
    r = parse({"heads": ["intent", "urgency"], "text": "refund please", "request_id": 3})
    assert r.heads == ("intent", "urgency") and r.head is None
    assert r.text == "refund please" and r.request_id == "3"


def test_single_head_has_a_one_element_heads_tuple():
    assert parse(ok()).heads == ("support",)
    one = parse({"heads": ["support"], "text": "my invoice is wrong"})
    assert one == parse(ok()) and one.head == "support"


def test_sixteen_heads_accepted():
    names = [f"h{i}" for i in range(16)]
    assert parse({"heads": names, "text": "x"}).heads == tuple(names)


@pytest.mark.parametrize("kwargs, message", [
    pytest.param({"head": "a", "heads": ["b"], "text": "t"}, r"either 'head' or 'heads', not both$", id="both"),
    pytest.param({"heads": [], "text": "t"}, r"'heads' must name 1 to 16 heads, got 0$", id="empty"),
    pytest.param({"heads": [f"h{i}" for i in range(17)], "text": "t"}, r"1 to 16 heads, got 17$", id="17"),
    pytest.param({"heads": "intent", "text": "t"}, r"'heads' must be a list of head names, got 'intent'$", id="str"),
    pytest.param({"heads": {"a": 1}, "text": "t"}, r"'heads' must be a list of head names", id="object"),
    pytest.param({"heads": ["a", "b", "a"], "text": "t"}, r"'heads' names 'a' more than once$", id="dup"),
    pytest.param({"heads": ["a", 5], "text": "t"}, r"'heads\[1\]' must be a non-empty string, got 5$", id="int"),
    pytest.param({"heads": ["a", " "], "text": "t"}, r"'heads\[1\]' must be a non-empty string", id="blank"),
    pytest.param({"heads": ["a", "h" * (MAX_HEAD_NAME + 1)], "text": "t"}, r"'heads\[1\]' is not a valid head name",
                 id="long"),
    pytest.param({"heads": ["a\x00"], "text": "t"}, r"'heads\[0\]' is not a valid head name", id="nul"),
    pytest.param({"heads": ["a\udcff"], "text": "t"}, r"'heads\[0\]' is not valid Unicode", id="surrogate"),
    pytest.param({"heads": ["a", "b"]}, r"missing required field\(s\): text$", id="no-text"),
    pytest.param({"heads": ["a", "b"], "text": ""}, r"'text' is empty$", id="empty-text"),
])
def test_invalid_heads_payloads(kwargs, message):
    with pytest.raises(PayloadError, match=message):
        parse(kwargs)


def test_request_needs_a_head_and_consistent_fields():
    with pytest.raises(ValueError):
        ClassifyRequest("t", None, "text")
    with pytest.raises(ValueError):
        ClassifyRequest("t", "a", "text", heads=("a", "b"))


def test_salvage_of_a_heads_list():
    # one row stands for a whole bad multi-head task: no single head to name
    assert salvage({"heads": ["a", "b"], "text": "", "request_id": "r"})["head_name"] is None
    assert salvage({"heads": ["a"], "text": ""})["head_name"] == "a"
    assert salvage({"heads": [5], "text": ""})["head_name"] is None
    assert salvage({"heads": "a", "head": "b"})["head_name"] is None


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                 max_size=4),
                     max_leaves=20)


@hsettings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(_json, st.lists(st.one_of(st.sampled_from(["a", "b", "c"]), st.text(max_size=8), _json),
                                 max_size=20)))
def test_any_heads_value_parses_or_is_a_payload_error(heads):
    kwargs = {"heads": heads, "text": "hello"}
    try:
        r = parse_request("t", (), kwargs, MAX)
    except PayloadError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 300
        clean_str(str(exc)).encode("utf-8")
    else:
        assert isinstance(heads, list) and r.heads == tuple(heads) and 1 <= len(heads) <= 16
        assert len(set(heads)) == len(heads) and all(isinstance(h, str) and h.strip() for h in heads)
    out = salvage(kwargs)
    assert out["head_name"] is None or (isinstance(heads, list) and out["head_name"] == clean_str(heads[0], 128))


# --- multi-text tasks -------------------------------------------------------------------


def test_texts_task_keeps_positions_and_request_ids():
    r = parse({"heads": ["a", "b"], "texts": ["one", "two", "three"], "request_ids": ["r0", 7, None]})
    assert r.multi and r.heads == ("a", "b") and r.bad == ()
    assert [(it.item, it.text, it.request_id) for it in r.items] == [(0, "one", "r0"), (1, "two", "7"),
                                                                    (2, "three", None)]


def test_bad_texts_inside_a_texts_task_are_items_of_their_own():
    r = parse({"head": "h", "texts": ["fine", "", 5, "x" * (MAX + 1), "nul\x00", "also fine"],
               "request_ids": ["a", "b", "c", "d", "e", "f"]})
    assert [(it.item, it.text) for it in r.items] == [(0, "fine"), (5, "also fine")]
    assert [(b.item, b.request_id) for b in r.bad] == [(1, "b"), (2, "c"), (3, "d"), (4, "e")]
    errors = [b.error for b in r.bad]
    assert errors[0] == "'texts[1]' is empty"
    assert errors[1] == "'texts[2]' must be a string, got int"
    assert errors[2].startswith("'texts[3]' is too long")
    assert errors[3].startswith("'texts[4]' contains a NUL byte")
    assert r.n_texts == 6


def test_a_texts_task_whose_texts_are_all_bad_is_still_a_request():
    r = parse({"head": "h", "texts": ["", " "]})
    assert r.items == () and len(r.bad) == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"head": "h", "texts": "one"}, r"'texts' must be a list of strings, got str"),
    ({"head": "h", "texts": []}, r"'texts' must hold 1 to 1000 texts"),
    ({"head": "h", "texts": ["a"] * 1001},
     r"'texts' must hold 1 to 1000 texts \(EMBEDCLF_MAX_TEXTS_PER_TASK\), got 1001"),
    ({"head": "h", "texts": ["a"], "text": "b"}, r"send either 'text' or 'texts'"),
    ({"head": "h", "texts": ["a"], "request_id": "r"}, r"send 'request_ids'"),
    ({"head": "h", "text": "a", "request_ids": ["r"]}, r"'request_ids' goes with 'texts'"),
    ({"head": "h", "texts": ["a", "b"], "request_ids": ["r"]}, r"one id per text \(2\)"),
    ({"head": "h", "texts": ["a"], "request_ids": [1.5]}, r"'request_ids\[0\]' must be a string or integer"),
    ({"head": "h", "texts": ["a"], "request_ids": ["r" * 300]}, r"'request_ids\[0\]' is longer than"),
    ({"heads": [], "texts": ["a"]}, r"'heads' must name 1 to 16 heads"),
])
def test_texts_task_invalid_as_a_whole(kwargs, message):
    with pytest.raises(PayloadError, match=message):
        parse(kwargs)


def test_max_texts_is_configurable():
    with pytest.raises(PayloadError, match="1 to 2 texts"):
        parse_request("t", (), {"head": "h", "texts": ["a", "b", "c"]}, MAX, max_texts=2)
    assert len(parse_request("t", (), {"head": "h", "texts": ["a", "b"]}, MAX, max_texts=2).items) == 2


def test_single_text_request_has_item_zero():
    r = parse(ok(request_id="r"))
    assert not r.multi and [(it.item, it.text, it.request_id) for it in r.items] == [(0, "my invoice is wrong", "r")]
