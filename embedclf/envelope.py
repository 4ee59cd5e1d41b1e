"""Celery task messages as they sit in a Redis list: encode them, and decode them from raw bytes.

Pure (stdlib only), shared by the producer client and the worker's receive loop.

kombu's Redis transport stores each message as one JSON object, the *envelope*::

    {"body": "<base64 of the serialized body>", "content-type": "application/json",
     "content-encoding": "utf-8", "headers": {...}, "properties": {"body_encoding": "base64", ...}}

Celery's message protocol 2 puts the task name and id in ``headers`` (``task``, ``id``) and
``[args, kwargs, embed]`` in the body; protocol 1 (what several non-Python clients still write)
puts everything in the body: ``{"task", "id", "args", "kwargs", ...}``.

:func:`decode` never raises and never deserialises anything but JSON: a message that cannot be
used becomes a :class:`Decoded` with ``error`` set, under the message's own task id when it has a
usable one, else under a deterministic id derived from its raw bytes (:func:`raw_task_id`), so a
redelivery of the same bytes never yields a second row. Size limits are checked on the raw bytes
before anything is parsed, and on the body while it is decompressed (bounded output).
"""

from __future__ import annotations

import base64
import binascii
import bz2
import hashlib
import json
import lzma
import re
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_fast_loads: Callable[[bytes | str], Any] | None
try:  # orjson parses several times faster; everything it refuses goes to the standard parser
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - optional speed-up
    _fast_loads = None

#: task ids longer than this are refused (never truncated into another task's id)
MAX_TASK_ID_CHARS = 255
JSON_TYPES = ("application/json", "application/x-json")
#: kombu's compression content types (its ``zlib`` is registered as ``application/x-gzip``)
_GZIP = ("application/x-gzip", "application/gzip", "application/zlib", "zlib", "gzip")
_BZ2 = ("application/x-bz2", "bzip2", "bz2")
_LZMA = ("application/x-lzma", "lzma", "xz")

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def raw_task_id(raw: bytes) -> str:
    """The deterministic id of a message without a usable task id: ``msg-<sha1 of its bytes>``."""
    return "msg-" + hashlib.sha1(raw).hexdigest()


_TAIL_ID = re.compile(rb'"(?:id|correlation_id)":\s*"((?:[^"\\]|\\.){1,1530})"')


def task_id_from_tail(tail: bytes) -> str | None:
    """The task id of a message too large to decode, read from its last bytes (kombu writes the
    headers and properties after the body), or None. Only a clean, usable id is returned."""
    found = _TAIL_ID.findall(tail)
    if not found:
        return None
    try:
        value = json.loads(b'"' + found[-1] + b'"')
    except ValueError:
        return None
    return usable_task_id(value)


def sha1_task_id(sha1_hex: str) -> str:
    """:func:`raw_task_id` from a SHA-1 computed elsewhere (Redis computes it for oversized messages)."""
    return "msg-" + sha1_hex


@dataclass(slots=True)
class Decoded:
    """One message, decoded as far as it could be."""

    task_id: str
    task_name: str | None = None
    args: Any = ()
    kwargs: Any = None
    headers: dict = field(default_factory=dict)
    #: protocol 2's third body element (callbacks, errbacks, chain, chord), or protocol 1's equivalents
    embed: dict = field(default_factory=dict)
    #: why the message cannot be used (None: it can)
    error: str | None = None
    protocol: int = 2

    @property
    def ok(self) -> bool:
        return self.error is None


class _Bad(Exception):
    pass


def _short(value: Any, limit: int = 80) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def usable_task_id(value: Any) -> str | None:
    """``value`` if it can be a row's task id as it is (a clean string of 1-255 characters), else None."""
    if not isinstance(value, str) or not value or len(value) > MAX_TASK_ID_CHARS or "\x00" in value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _id_problem(value: Any) -> str:
    if value is None:
        return "message has no task id"
    if not isinstance(value, str):
        return f"task id must be a string, got {type(value).__name__}"
    if not value:
        return "task id is empty"
    if len(value) > MAX_TASK_ID_CHARS:
        return f"task id is {len(value)} characters long (max {MAX_TASK_ID_CHARS}); refused, not truncated"
    return f"task id {_short(value.encode('utf-8', 'backslashreplace').decode('ascii', 'replace'))} " \
           "contains a NUL byte or invalid Unicode"


def decompress(data: bytes, kind: str, limit: int) -> bytes:
    """Decompress ``data`` (kombu's compression content type ``kind``) to at most ``limit`` bytes."""
    try:
        if kind in _GZIP:
            d = zlib.decompressobj(47)  # zlib or gzip header, detected
            out = d.decompress(data, limit + 1)
            if len(out) <= limit and not d.eof and not d.unconsumed_tail:
                out += d.flush()
        elif kind in _BZ2:
            out = bz2.BZ2Decompressor().decompress(data, max_length=limit + 1)
        elif kind in _LZMA:
            out = lzma.LZMADecompressor().decompress(data, max_length=limit + 1)
        else:
            raise _Bad(f"unsupported compression {_short(kind)} (supported: zlib/gzip, bz2, lzma)")
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise _Bad(f"body does not decompress as {kind}: {exc}") from None
    if len(out) > limit:
        raise _Bad(f"body decompresses to more than {limit} bytes (EMBEDCLF_MAX_PAYLOAD_BYTES); not decoded")
    return out


def _json(data: bytes | str, what: str) -> Any:
    if _fast_loads is not None:
        try:
            return _fast_loads(data)
        except ValueError:
            pass  # the standard parser decides (and explains): lone surrogates, huge ints, deep nesting
    try:
        return json.loads(data)
    except RecursionError:
        raise _Bad(f"{what} is nested too deeply") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _Bad(f"{what} is not valid JSON: {str(exc)[:120]}") from None


def _body_bytes(env: dict, limit: int) -> bytes:
    props = env.get("properties")
    if not isinstance(props, dict):
        raise _Bad("envelope has no 'properties' object")
    body = env.get("body")
    if not isinstance(body, str):
        raise _Bad(f"envelope 'body' must be a string, got {type(body).__name__}")
    encoding = props.get("body_encoding")
    if encoding == "base64":
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _Bad(f"body is not valid base64: {exc}") from None
    elif encoding in (None, "", "utf-8"):
        try:
            data = body.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad("body is not valid Unicode (lone surrogate)") from None
    else:
        raise _Bad(f"unsupported body_encoding {_short(encoding)} (supported: base64)")
    headers = env.get("headers") or {}
    compression = headers.get("compression") if isinstance(headers, dict) else None
    if compression is not None:
        data = decompress(data, str(compression), limit)
    elif len(data) > limit:  # pragma: no cover - the raw size check catches it first
        raise _Bad(f"body is {len(data)} bytes (max {limit})")
    return data


def decode(raw: bytes, max_bytes: int) -> Decoded:
    """Decode one raw queue entry. Never raises; refuses anything that is not JSON."""
    if len(raw) > max_bytes:
        return Decoded(raw_task_id(raw), error=f"message is {len(raw)} bytes (max {max_bytes}, "
                                       "EMBEDCLF_MAX_PAYLOAD_BYTES); not decoded")
    try:
        env = _json(raw, "message")
        if not isinstance(env, dict):
            raise _Bad(f"message is not a JSON object (got {type(env).__name__})")
        headers = env.get("headers")
        if headers is None:
            headers = {}
        if not isinstance(headers, dict):
            raise _Bad(f"message 'headers' must be an object, got {type(headers).__name__}")
    except _Bad as exc:
        return Decoded(raw_task_id(raw), error=f"malformed message: {exc}")
    # the id first: every later error is reported under it when it is usable
    props: dict[str, Any] = env["properties"] if isinstance(env.get("properties"), dict) else {}
    claimed = headers.get("id", props.get("correlation_id"))
    task_id = usable_task_id(claimed)
    out = Decoded(task_id or raw_task_id(raw), task_name=headers.get("task"), headers=headers)
    try:
        ctype = env.get("content-type")
        base = ctype.split(";")[0].strip().lower() if isinstance(ctype, str) else ctype
        if base not in JSON_TYPES:
            raise _Bad(f"content type {_short(ctype)} refused, not deserialised (JSON only)")
        body = _json(_body_bytes(env, max_bytes), "body")
        if "task" in headers:  # protocol 2: [args, kwargs, embed]
            if not isinstance(body, list) or len(body) != 3:
                raise _Bad("protocol 2 body must be [args, kwargs, embed]")
            out.args, out.kwargs, embed = body
            out.embed = embed if isinstance(embed, dict) else {}
        elif isinstance(body, dict) and "task" in body:  # protocol 1: everything in the body
            out.protocol = 1
            out.task_name = body.get("task")
            if "id" not in headers and "id" in body:
                claimed = body["id"]
                task_id = usable_task_id(claimed)
                out.task_id = task_id or raw_task_id(raw)
            out.args, out.kwargs = body.get("args", ()), body.get("kwargs", {})
            out.embed = {k: body.get(k) for k in ("callbacks", "errbacks", "chord") if k in body}
            for k in ("eta", "expires", "retries"):
                if k in body:
                    out.headers.setdefault(k, body[k])
        else:
            raise _Bad("no task name: neither a protocol 2 'task' header nor a protocol 1 body")
    except _Bad as exc:
        out.error = f"malformed message: {exc}"
        if task_id is None and claimed is not None:
            out.error += f"; {_id_problem(claimed)}"
        return out
    if task_id is None:
        out.error = _id_problem(claimed)
    return out


def encode(task_name: str, task_id: str, kwargs: dict, queue: str, *, args: list | None = None,
           embed: dict | None = None, extra_headers: dict | None = None, origin: str | None = None) -> bytes:
    """A protocol 2 envelope exactly as kombu's Redis transport writes it (for LPUSH onto ``queue``)."""
    body = json.dumps([args or [], kwargs, {**_EMBED, **(embed or {})}])
    headers = {
        "lang": "py", "task": task_name, "id": task_id, "shadow": None, "eta": None, "expires": None,
        "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
        "parent_id": None, "argsrepr": "()", "kwargsrepr": kwargs_repr(kwargs), "origin": origin,
        "ignore_result": False,
    }
    if extra_headers:
        headers.update(extra_headers)
    envelope = {
        "body": base64.b64encode(body.encode("utf-8")).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id, "reply_to": None, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope).encode("utf-8")


def kwargs_repr(kwargs: Any) -> str:
    """What monitoring shows of a task's kwargs: heads and sizes, never the texts (personal data)."""
    if not isinstance(kwargs, dict):
        return f"<{type(kwargs).__name__}>"
    parts = []
    for key in ("head", "heads"):
        if key in kwargs:
            parts.append(f"{key}={_short(kwargs[key], 120)}")
    if "text" in kwargs:
        t = kwargs["text"]
        parts.append(f"text=<{len(t)} chars>" if isinstance(t, str) else f"text=<{type(t).__name__}>")
    if "texts" in kwargs:
        t = kwargs["texts"]
        parts.append(f"texts=<{len(t)} texts>" if isinstance(t, list) else f"texts=<{type(t).__name__}>")
    return "{" + ", ".join(parts) + "}"


def envelope_size(body_bytes: int, overhead: int = 1024) -> int:
    """Upper estimate of the raw size of a message whose JSON body has ``body_bytes`` bytes."""
    return 4 * ((body_bytes + 2) // 3) + overhead
