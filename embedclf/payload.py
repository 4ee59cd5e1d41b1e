"""The ``embedclf.classify`` task contract: validation of what producers send.

Pure. A payload either becomes a :class:`ClassifyRequest` or a one-line
error message that ends up in the task's ``error`` row.

Task ``embedclf.classify``, keyword arguments (JSON):

==============  =========  ==================================================
``head``        str        name of an active head
``heads``       list[str]  1-16 distinct head names: one embedding, one row
                           per head (send exactly one of ``head``/``heads``)
``text``        str        the text to classify (required, non-empty, no NUL)
``request_id``  str/int    caller's correlation id (optional, <= 256 chars)
``enqueued_at`` number     producer's Unix time, for latency (optional)
==============  =========  ==================================================

Rows: one per (task, head). A payload that is invalid as a whole (bad text,
bad ``heads`` list, ...) gets a single error row whose ``head_name`` is the
head when exactly one was named, else NULL. An unknown head among several
gets an error row for that head only; the other heads still get their rows.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

TASK_NAME = "embedclf.classify"
REQUIRED = ("head", "text")  # "heads" may stand in for "head"
OPTIONAL = ("request_id", "enqueued_at")
MAX_ID_CHARS = 256
MAX_HEAD_NAME = 128
MAX_HEADS = 16


class PayloadError(ValueError):
    """A task payload that cannot be classified; the message goes into the error row."""


@dataclass(frozen=True)
class ClassifyRequest:
    """One valid task. ``heads`` lists every head it names; ``head`` is that head when there is one, else None."""

    task_id: str
    head: str | None
    text: str
    request_id: str | None = None
    enqueued_at: dt.datetime | None = None
    heads: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.heads:
            if self.head is None:
                raise ValueError("a request names a head or heads")
            object.__setattr__(self, "heads", (self.head,))
        else:
            object.__setattr__(self, "heads", tuple(self.heads))
            if self.head is None and len(self.heads) == 1:
                object.__setattr__(self, "head", self.heads[0])
            elif self.head is not None and self.heads != (self.head,):
                raise ValueError("'head' and 'heads' disagree")


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


def _head_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(f"'{field}' must be a non-empty string, got {_short(value)}")
    if len(value) > MAX_HEAD_NAME or "\x00" in value:
        raise PayloadError(f"'{field}' is not a valid head name")
    _check_chars(value, field)
    return value


def _head_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise PayloadError(f"'heads' must be a list of head names, got {_short(value)}")
    if not 1 <= len(value) <= MAX_HEADS:
        raise PayloadError(f"'heads' must name 1 to {MAX_HEADS} heads, got {len(value)}")
    names = tuple(_head_name(v, f"heads[{i}]") for i, v in enumerate(value))
    if len(set(names)) != len(names):
        dup = next(n for i, n in enumerate(names) if n in names[:i])
        raise PayloadError(f"'heads' names {clean_str(dup, 60)!r} more than once")
    return names


def parse_request(task_id: str, args: Any, kwargs: Any, max_text_chars: int) -> ClassifyRequest:
    """Validate one task's arguments; raises :class:`PayloadError` with a clear message."""
    if args not in ((), [], None):
        raise PayloadError("positional arguments are not accepted; send kwargs head=..., text=...")
    if not isinstance(kwargs, dict):
        raise PayloadError(f"kwargs must be an object, got {type(kwargs).__name__}")
    missing = [k for k in REQUIRED if k not in kwargs and not (k == "head" and "heads" in kwargs)]
    if missing:
        raise PayloadError(f"missing required field(s): {', '.join(missing)}")
    extra = sorted(str(k) for k in kwargs if k not in REQUIRED and k not in OPTIONAL and k != "heads")
    if extra:
        raise PayloadError(f"unexpected field(s): {clean_str(', '.join(extra), 200)}")
    if "head" in kwargs and "heads" in kwargs:
        raise PayloadError("send either 'head' or 'heads', not both")
    if "heads" in kwargs:
        head, heads = None, _head_list(kwargs["heads"])
    else:
        head, heads = _head_name(kwargs["head"], "head"), ()
    text = kwargs["text"]
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
        heads=heads,
    )


def salvage(kwargs: Any) -> dict[str, Any]:
    """Best-effort head name, request id and enqueue time of a bad payload, for its error row.

    A ``heads`` list gives ``head_name`` NULL unless it holds exactly one string: the task's
    single error row then stands for the whole task.
    """
    if not isinstance(kwargs, dict):
        return {"head_name": None, "request_id": None, "enqueued_at": None}
    try:
        enqueued_at = _timestamp(kwargs.get("enqueued_at"))
    except PayloadError:
        enqueued_at = None
    head = kwargs.get("head")
    many = kwargs.get("heads")
    if "heads" in kwargs:
        head = many[0] if isinstance(many, list) and len(many) == 1 and "head" not in kwargs else None
    rid = kwargs.get("request_id")
    return {
        "head_name": clean_str(head, MAX_HEAD_NAME) if isinstance(head, str) else None,
        "request_id": clean_str(str(rid), MAX_ID_CHARS) if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None,
        "enqueued_at": enqueued_at,
    }
