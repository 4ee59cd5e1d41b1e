"""The Celery message envelope, decoded from raw bytes: every malformed kind becomes an error, never an exception."""

from __future__ import annotations

import base64
import bz2
import json
import lzma
import pickle
import zlib

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from embedclf.envelope import (
    MAX_TASK_ID_CHARS,
    decode,
    decompress,
    encode,
    kwargs_repr,
    raw_task_id,
    usable_task_id,
)

LIMIT = 1 << 20
KW = {"head": "h", "text": "héllo"}


def envelope(body: bytes | str | object, *, headers: object = None, properties: object = "default",
             content_type: object = "application/json", encoding: str | None = "base64") -> bytes:
    """A kombu-shaped message with the given parts (``body`` bytes are base64-encoded when encoding='base64')."""
    if isinstance(body, bytes) and encoding == "base64":
        body = base64.b64encode(body).decode()
    env: dict = {"body": body, "content-encoding": "utf-8", "content-type": content_type,
                 "headers": {"task": "embedclf.classify", "id": "tid-1"} if headers is None else headers}
    if properties == "default":
        properties = {"body_encoding": encoding, "correlation_id": "tid-1", "delivery_tag": "x"}
    if properties is not None:
        env["properties"] = properties
    return json.dumps(env).encode()


def p2_body(kwargs: dict = KW) -> bytes:
    return json.dumps([[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]).encode()


@pytest.mark.redis
def test_celery_send_task_messages_decode(redis_url):
    """What Celery itself writes into Redis (protocol 2, and zlib-compressed) decodes to the same task."""
    import redis
    from celery import Celery

    app = Celery(broker=redis_url, set_as_current=False)
    r = redis.Redis.from_url(redis_url)
    r.delete("envelope-test")
    app.send_task("embedclf.classify", kwargs=KW, task_id="plain", queue="envelope-test")
    app.send_task("embedclf.classify", kwargs=KW, task_id="zipped", queue="envelope-test", compression="zlib")
    raws = r.lrange("envelope-test", 0, -1)[::-1]
    r.delete("envelope-test")
    app.close()
    for raw, tid in zip(raws, ["plain", "zipped"]):
        d = decode(raw, LIMIT)
        assert d.ok, d.error
        assert (d.task_id, d.task_name, d.protocol, list(d.args), d.kwargs) == (tid, "embedclf.classify", 2, [], KW)
        assert d.headers["root_id"] == tid


def test_our_encoder_writes_what_celery_writes():
    raw = encode("embedclf.classify", "t-9", KW, "celery")
    env = json.loads(raw)
    assert env["properties"]["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    assert env["headers"]["id"] == env["properties"]["correlation_id"] == "t-9"
    d = decode(raw, LIMIT)
    assert d.ok and d.task_id == "t-9" and d.kwargs == KW
    assert "héllo" not in env["headers"]["kwargsrepr"]  # monitoring never sees the text


def test_protocol1_message_as_other_languages_write_it():
    body = json.dumps({"id": "p1-id", "task": "embedclf.classify", "args": [], "kwargs": KW, "retries": 0,
                       "eta": None, "expires": None}).encode()
    d = decode(envelope(body, headers={}, properties={"body_encoding": "base64", "correlation_id": "p1-id"}), LIMIT)
    assert d.ok and d.protocol == 1 and d.task_id == "p1-id" and d.kwargs == KW
    # no headers at all, and a plain (not base64) JSON body
    d = decode(envelope(body.decode(), headers=None or {}, encoding=None), LIMIT)
    assert d.ok and d.task_id == "p1-id"


@pytest.mark.parametrize("compression, compress", [
    ("application/x-gzip", zlib.compress), ("application/x-bz2", bz2.compress), ("application/x-lzma", lzma.compress),
])
def test_compressed_bodies(compression, compress):
    raw = envelope(compress(p2_body()), headers={"task": "embedclf.classify", "id": "c1", "compression": compression})
    d = decode(raw, LIMIT)
    assert d.ok and d.kwargs == KW


def test_a_compressed_body_is_decompressed_only_up_to_the_limit():
    bomb = zlib.compress(b"[" + b" " * (50 * LIMIT) + b"]")  # 50 MiB of spaces: ~50 KB compressed
    raw = envelope(bomb, headers={"task": "embedclf.classify", "id": "bomb", "compression": "application/x-gzip"})
    assert len(raw) < LIMIT
    d = decode(raw, LIMIT)
    assert d.task_id == "bomb" and "decompresses to more than" in d.error
    with pytest.raises(Exception, match="more than 1000 bytes"):
        decompress(zlib.compress(b"x" * 5000), "application/x-gzip", 1000)
    assert decompress(zlib.compress(b"x" * 1000), "application/x-gzip", 1000) == b"x" * 1000


MALFORMED = [
    ("not json", b"{not json", None, "message is not valid JSON"),
    ("not an object", b"[1, 2, 3]", None, "message is not a JSON object"),
    ("bad utf-8", b'{"body": "\xff\xfe"}', None, "message is not valid JSON"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, None, "nested too deeply"),
    ("headers a list", envelope(p2_body(), headers=["task", "id"]), None, "'headers' must be an object"),
    ("no properties", envelope(p2_body(), properties=None), "tid-1", "no 'properties' object"),
    ("bad base64", envelope("!!!not base64!!!", encoding="base64"), "tid-1", "not valid base64"),
    ("unknown body encoding", envelope("abc", encoding="rot13"), "tid-1", "unsupported body_encoding"),
    ("unknown compression", envelope(zlib.compress(p2_body()), headers={"task": "embedclf.classify", "id": "tid-1",
                                                                         "compression": "application/x-snappy"}),
     "tid-1", "unsupported compression"),
    ("bad compressed data", envelope(b"not zlib", headers={"task": "embedclf.classify", "id": "tid-1",
                                                           "compression": "application/x-gzip"}),
     "tid-1", "does not decompress"),
    ("pickle", envelope(pickle.dumps([[], KW, {}]), content_type="application/x-python-serialize"), "tid-1",
     "refused, not deserialised (JSON only)"),
    ("yaml", envelope(b"head: h", content_type="application/x-yaml"), "tid-1", "JSON only"),
    ("no content type", envelope(p2_body(), content_type=None), "tid-1", "JSON only"),
    ("body not json", envelope(b"{oops"), "tid-1", "body is not valid JSON"),
    ("protocol 2 body not a triple", envelope(json.dumps({"a": 1}).encode()), "tid-1", "[args, kwargs, embed]"),
    ("no task name anywhere", envelope(p2_body(), headers={"id": "tid-1"}), "tid-1", "no task name"),
    ("body not a string", envelope(12345), "tid-1", "'body' must be a string"),
    ("deeply nested body", envelope(b"[" * 100_000 + b"]" * 100_000), "tid-1", "nested too deeply"),
]


@pytest.mark.parametrize("name, raw, task_id, fragment", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_messages_become_errors_under_a_usable_or_deterministic_id(name, raw, task_id, fragment):
    d = decode(raw, max(LIMIT, len(raw)))
    assert not d.ok and fragment in d.error, d.error
    assert d.task_id == (task_id or raw_task_id(raw))
    assert decode(raw, max(LIMIT, len(raw))).task_id == d.task_id  # a redelivery gets the same id


def test_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    d = decode(envelope(pickle.dumps([[], {"text": Evil()}, {}]), content_type="application/x-python-serialize"),
               LIMIT)
    assert "JSON only" in d.error and not marker.exists()


def test_lone_surrogates_in_the_raw_body():
    raw = envelope(p2_body()).replace(b"tid-1", b"tid-\xed\xa0\x80")  # a surrogate encoded as UTF-8
    d = decode(raw, LIMIT)
    assert not d.ok and d.task_id == raw_task_id(raw)
    # an escaped lone surrogate in the text decodes; the payload check refuses it later
    d = decode(envelope(p2_body({"head": "h", "text": "a\ud800b"})), LIMIT)
    assert d.ok and d.kwargs["text"] == "a\ud800b"


def test_size_limit_applies_to_the_raw_bytes_before_anything_is_parsed():
    raw = envelope(p2_body({"head": "h", "text": "x" * 5000}))
    d = decode(raw, 4096)
    assert d.task_id == raw_task_id(raw) and f"message is {len(raw)} bytes (max 4096" in d.error
    assert decode(raw, len(raw)).ok


@pytest.mark.parametrize("bad_id, problem", [
    (None, "message has no task id"),
    ("", "task id is empty"),
    (42, "task id must be a string"),
    ("x" * (MAX_TASK_ID_CHARS + 1), "256 characters long (max 255); refused, not truncated"),
    ("a\x00b", "NUL byte or invalid Unicode"),
])
def test_unusable_task_ids_get_a_deterministic_id_and_say_why(bad_id, problem):
    raw = envelope(p2_body(), headers={"task": "embedclf.classify", "id": bad_id},
                   properties={"body_encoding": "base64"})
    d = decode(raw, LIMIT)
    assert d.task_id == raw_task_id(raw) and problem in d.error
    assert d.kwargs == KW  # the rest was readable


def test_two_long_ids_sharing_a_prefix_never_collide():
    a = envelope(p2_body(), headers={"task": "embedclf.classify", "id": "p" * 300 + "a"},
                 properties={"body_encoding": "base64"})
    b = envelope(p2_body(), headers={"task": "embedclf.classify", "id": "p" * 300 + "b"},
                 properties={"body_encoding": "base64"})
    assert decode(a, LIMIT).task_id != decode(b, LIMIT).task_id


def test_usable_task_id():
    assert usable_task_id("abc") == "abc" and usable_task_id("x" * 255) == "x" * 255
    assert usable_task_id("x" * 256) is None and usable_task_id("a\ud800") is None and usable_task_id(7) is None


def test_kwargs_repr_never_shows_texts():
    assert kwargs_repr({"head": "h", "text": "secret words"}) == "{head='h', text=<12 chars>}"
    assert kwargs_repr({"heads": ["a", "b"], "texts": ["secret"] * 3}) == "{heads=['a', 'b'], texts=<3 texts>}"
    assert "secret" not in kwargs_repr({"text": ["secret"]}) and kwargs_repr(None) == "<NoneType>"


@hsettings(max_examples=400, deadline=None, derandomize=True)
@given(st.binary(max_size=400) | st.builds(lambda d: json.dumps(d).encode(), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["body", "headers", "properties", "content-type", "task", "id", "body_encoding", "compression", "x"]),
        inner, max_size=5), max_leaves=25)))
def test_any_bytes_decode_without_raising(raw):
    d = decode(raw, LIMIT)
    assert isinstance(d.task_id, str) and 0 < len(d.task_id) <= MAX_TASK_ID_CHARS
    assert d.ok or (d.error and "\n" not in d.error)
