"""The ``embedclf.classify`` task contract: validation of what producers send.

Pure. A payload either becomes a :class:`ClassifyRequest` or a one-line
error message that ends up in the task's ``error`` row.

Task ``embedclf.classify``, keyword arguments (JSON):

==============  ========  ===================================================
``head``        str       name of an active head (required)
``text``        str       the text to classify (required, non-empty, no NUL)
``request_id``  str/int   caller's correlation id (optional, <= 256 chars)
``enqueued_at`` number    producer's Unix time, for latency (optional)
==============  ========  ===================================================
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

TASK_NAME = "embedclf.classify"
REQUIRED = ("head", "text")
OPTIONAL = ("request_id", "enqueued_at")
MAX_ID_CHARS = 256
MAX_HEAD_NAME = 128


class PayloadError(ValueError):
    """A task payload that cannot be classified; the message goes into the error row."""


@dataclass(frozen=True)
class ClassifyRequest:
    task_id: str
    head: str
    text: str
    request_id: str | None = None
    enqueued_at: dt.datetime | None = None


def _short(value: Any, limit: int = 60) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def clean_str(value: str, limit: int = 500) -> str:
    """A string safe to store in Postgres: no NUL, no lone surrogates, bounded."""
    s = value.replace("\x00", "\\x00")
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _check_text_chars(text: str) -> None:
    if "\x00" in text:
        raise PayloadError(f"'text' contains a NUL byte at position {text.index(chr(0))}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"'text' is not valid Unicode (lone surrogate at position {exc.start})") from None


def _optional_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PayloadError(f"'request_id' must be a string or integer, got {type(value).__name__}")
    s = str(value)
    if len(s) > MAX_ID_CHARS:
        raise PayloadError(f"'request_id' is longer than {MAX_ID_CHARS} characters")
    if "\x00" in s:
        raise PayloadError("'request_id' contains a NUL byte")
    _check_chars(s, "request_id")
    return s


def _check_chars(s: str, field: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"'{field}' is not valid Unicode") from None


def _timestamp(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PayloadError(f"'enqueued_at' must be a Unix timestamp (number), got {_short(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float (valid JSON, e.g. 400 digits)
        raise PayloadError(f"'enqueued_at' is out of range: {_short(value)}") from None
    if not finite:
        raise PayloadError(f"'enqueued_at' must be a Unix timestamp (number), got {_short(value)}")
    try:
        return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise PayloadError(f"'enqueued_at' is out of range: {_short(value)}") from None


def parse_request(task_id: str, args: Any, kwargs: Any, max_text_chars: int) -> ClassifyRequest:
    """Validate one task's arguments; raises :class:`PayloadError` with a clear message."""
    if args not in ((), [], None):
        raise PayloadError("positional arguments are not accepted; send kwargs head=..., text=...")
    if not isinstance(kwargs, dict):
        raise PayloadError(f"kwargs must be an object, got {type(kwargs).__name__}")
    missing = [k for k in REQUIRED if k not in kwargs]
    if missing:
        raise PayloadError(f"missing required field(s): {', '.join(missing)}")
    extra = sorted(str(k) for k in kwargs if k not in REQUIRED and k not in OPTIONAL)
    if extra:
        raise PayloadError(f"unexpected field(s): {clean_str(', '.join(extra), 200)}")
    head, text = kwargs["head"], kwargs["text"]
    if not isinstance(head, str) or not head.strip():
        raise PayloadError(f"'head' must be a non-empty string, got {_short(head)}")
    if len(head) > MAX_HEAD_NAME or "\x00" in head:
        raise PayloadError("'head' is not a valid head name")
    _check_chars(head, "head")
    if not isinstance(text, str):
        raise PayloadError(f"'text' must be a string, got {type(text).__name__}")
    if len(text) > max_text_chars:
        raise PayloadError(f"'text' is too long: {len(text)} characters (max {max_text_chars})")
    if not text.strip():
        raise PayloadError("'text' is empty")
    _check_text_chars(text)
    return ClassifyRequest(
        task_id=task_id,
        head=head,
        text=text,
        request_id=_optional_id(kwargs.get("request_id")),
        enqueued_at=_timestamp(kwargs.get("enqueued_at")),
    )


def salvage(kwargs: Any) -> dict[str, Any]:
    """Best-effort head name, request id and enqueue time of a bad payload, for its error row."""
    if not isinstance(kwargs, dict):
        return {"head_name": None, "request_id": None, "enqueued_at": None}
    try:
        enqueued_at = _timestamp(kwargs.get("enqueued_at"))
    except PayloadError:
        enqueued_at = None
    head = kwargs.get("head")
    rid = kwargs.get("request_id")
    return {
        "head_name": clean_str(head, MAX_HEAD_NAME) if isinstance(head, str) else None,
        "request_id": clean_str(str(rid), MAX_ID_CHARS) if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None,
        "enqueued_at": enqueued_at,
    }
