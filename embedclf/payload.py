"""The ``embedclf.classify`` task contract: validation of what producers send.

Pure. A payload either becomes a :class:`ClassifyRequest` or a one-line
error message that ends up in the task's ``error`` row.

Task ``embedclf.classify``, keyword arguments (JSON):

===============  =========  =================================================
``head``         str        name of an active head
``heads``        list[str]  1-16 distinct head names: one embedding, one row
                            per head (send exactly one of ``head``/``heads``)
``text``         str        the text to classify (non-empty, no NUL)
``texts``        list[str]  1..``max_texts`` texts, one row per text and head
                            (send exactly one of ``text``/``texts``)
``request_id``   str/int    caller's correlation id (optional, <= 256 chars)
``request_ids``  list       with ``texts``: one id (str/int/null) per text
``enqueued_at``  number     producer's Unix time, for latency (optional)
===============  =========  =================================================

Rows: one per (text, head), keyed by (task id, ``item``, head): ``item`` is the
text's 0-based position (0 for a ``text`` task). A ``text`` task that is invalid
in any way gets one error row (item 0). A ``texts`` task that is invalid as a
whole (bad heads, not a list, too many texts, ...) gets one error row with
``item`` NULL; a bad text inside an otherwise valid ``texts`` task gets its own
error row and the other texts are classified. An error row's ``head_name`` is the
head when exactly one was named, else NULL (the row stands for every head). An
unknown head among several gets error rows for that head only.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from embedclf.errors import PayloadError  # noqa: F401  (re-exported: defined in errors.py)

TASK_NAME = "embedclf.classify"
REQUIRED = ("head", "text")  # "heads" may stand in for "head", "texts" for "text"
OPTIONAL = ("request_id", "request_ids", "enqueued_at")
MAX_ID_CHARS = 256
MAX_HEAD_NAME = 128
MAX_HEADS = 16
#: default cap on ``texts`` per task (EMBEDCLF_MAX_TEXTS_PER_TASK)
MAX_TEXTS = 1000
#: every field a task may send
_FIELDS = frozenset(REQUIRED + OPTIONAL + ("heads", "texts"))


# The records below are built once per message (and per text) on a worker's receive thread: plain slotted
# dataclasses, not frozen ones (a frozen dataclass sets each field through object.__setattr__: building a
# single-text request cost 2.7 us, 0.85 us now). Nothing mutates them after parse_request returns.


@dataclass(slots=True)
class TextItem:
    """A valid text of a task, at position ``item``."""

    item: int
    text: str
    request_id: str | None = None


@dataclass(slots=True)
class BadItem:
    """A text of a ``texts`` task that cannot be classified (its own error row)."""

    item: int
    error: str
    request_id: str | None = None


@dataclass(slots=True)
class ClassifyRequest:
    """One valid task.

    ``heads`` lists every head it names; ``head`` is that head when there is one, else None.
    ``items`` are its valid texts (for a ``text`` task: one item 0 built from ``text`` and
    ``request_id``), ``bad`` the texts of a ``texts`` task that got their own error.
    """

    task_id: str
    head: str | None
    text: str | None = None
    request_id: str | None = None
    enqueued_at: dt.datetime | None = None
    heads: tuple[str, ...] = ()
    items: tuple[TextItem, ...] = ()
    bad: tuple[BadItem, ...] = ()
    #: sent as ``texts=[...]``
    multi: bool = False
    #: hash of what the task asks (set by the worker; tells a redelivery from a reused task id)
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        if not self.heads:
            if self.head is None:
                raise PayloadError("a request names a head or heads")
            self.heads = (self.head,)
        else:
            self.heads = tuple(self.heads)
            if self.head is None and len(self.heads) == 1:
                self.head = self.heads[0]
            elif self.head is not None and self.heads != (self.head,):
                raise PayloadError("'head' and 'heads' disagree")
        if not self.items and not self.bad:
            if self.text is None:
                raise PayloadError("a request has a text or texts")
            self.items = (TextItem(0, self.text, self.request_id),)
        else:
            self.items = tuple(self.items)
            self.bad = tuple(self.bad)

    @property
    def n_texts(self) -> int:
        return len(self.items) + len(self.bad)


def _short(value: Any, limit: int = 60) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def clean_str(value: str, limit: int = 500) -> str:
    """A string safe to store in Postgres: no NUL, no lone surrogates, bounded."""
    s = value.replace("\x00", "\\x00")
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _text_problem(text: Any, max_text_chars: int, field: str = "text", index: int | None = None) -> str | None:
    """Why ``text`` cannot be classified, or None (``index``: its place in a list named ``field``)."""
    if isinstance(text, str) and 0 < len(text) <= max_text_chars and "\x00" not in text:
        try:
            text.encode("utf-8")
            if not text.isspace():
                return None  # the common case, checked first and without building names
        except UnicodeEncodeError:
            pass
    name = field if index is None else f"{field}[{index}]"
    if not isinstance(text, str):
        return f"'{name}' must be a string, got {type(text).__name__}"
    if len(text) > max_text_chars:
        return f"'{name}' is too long: {len(text)} characters (max {max_text_chars})"
    if not text.strip():
        return f"'{name}' is empty"
    if "\x00" in text:
        return f"'{name}' contains a NUL byte at position {text.index(chr(0))}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"'{name}' is not valid Unicode (lone surrogate at position {exc.start})"
    return None  # pragma: no cover - the fast path above answers every valid text


def _optional_id(value: Any, field: str = "request_id") -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PayloadError(f"'{field}' must be a string or integer, got {type(value).__name__}")
    s = str(value)
    if len(s) > MAX_ID_CHARS:
        raise PayloadError(f"'{field}' is longer than {MAX_ID_CHARS} characters")
    if "\x00" in s:
        raise PayloadError(f"'{field}' contains a NUL byte")
    _check_chars(s, field)
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


def _heads_of(kwargs: dict) -> tuple[str | None, tuple[str, ...]]:
    if "head" in kwargs and "heads" in kwargs:
        raise PayloadError("send either 'head' or 'heads', not both")
    if "heads" in kwargs:
        return None, _head_list(kwargs["heads"])
    return _head_name(kwargs["head"], "head"), ()


def _texts_of(kwargs: dict, max_text_chars: int, max_texts: int) -> tuple[tuple[TextItem, ...], tuple[BadItem, ...]]:
    texts = kwargs["texts"]
    if not isinstance(texts, list):
        raise PayloadError(f"'texts' must be a list of strings, got {type(texts).__name__}")
    if not 1 <= len(texts) <= max_texts:
        raise PayloadError(f"'texts' must hold 1 to {max_texts} texts (EMBEDCLF_MAX_TEXTS_PER_TASK), got {len(texts)}")
    rids = kwargs.get("request_ids")
    if rids is None:
        ids: list[str | None] = [None] * len(texts)
    elif not isinstance(rids, list) or len(rids) != len(texts):
        raise PayloadError(f"'request_ids' must be a list with one id per text ({len(texts)}), got {_short(rids)}")
    else:
        ids = [_optional_id(v, f"request_ids[{i}]") for i, v in enumerate(rids)]
    good, bad = [], []
    for i, (text, rid) in enumerate(zip(texts, ids)):
        problem = _text_problem(text, max_text_chars, "texts", i)
        if problem is None:
            good.append(TextItem(i, text, rid))
        else:
            bad.append(BadItem(i, problem, rid))
    return tuple(good), tuple(bad)


def parse_request(task_id: str, args: Any, kwargs: Any, max_text_chars: int,
                  max_texts: int = MAX_TEXTS, fingerprint: str | None = None) -> ClassifyRequest:
    """Validate one task's arguments; raises :class:`PayloadError` when the task is invalid as a whole."""
    if args not in ((), [], None):
        raise PayloadError("positional arguments are not accepted; send kwargs head=..., text=...")
    if not isinstance(kwargs, dict):
        raise PayloadError(f"kwargs must be an object, got {type(kwargs).__name__}")
    if ("head" not in kwargs and "heads" not in kwargs) or ("text" not in kwargs and "texts" not in kwargs):
        missing = [k for k in REQUIRED if k not in kwargs
                   and not (k == "head" and "heads" in kwargs) and not (k == "text" and "texts" in kwargs)]
        raise PayloadError(f"missing required field(s): {', '.join(missing)}")
    if not kwargs.keys() <= _FIELDS:
        extra = sorted(str(k) for k in kwargs if k not in _FIELDS)
        raise PayloadError(f"unexpected field(s): {clean_str(', '.join(extra), 200)}")
    head, heads = _heads_of(kwargs)
    enqueued_at = _timestamp(kwargs.get("enqueued_at"))
    if "texts" in kwargs:
        if "text" in kwargs:
            raise PayloadError("send either 'text' or 'texts', not both")
        if "request_id" in kwargs:
            raise PayloadError("with 'texts', send 'request_ids' (one per text), not 'request_id'")
        items, bad = _texts_of(kwargs, max_text_chars, max_texts)
        return ClassifyRequest(task_id=task_id, head=head, enqueued_at=enqueued_at, heads=heads, items=items,
                               bad=bad, multi=True, fingerprint=fingerprint)
    if "request_ids" in kwargs:
        raise PayloadError("'request_ids' goes with 'texts'; send 'request_id' with 'text'")
    text = kwargs["text"]
    problem = _text_problem(text, max_text_chars)
    if problem is not None:
        raise PayloadError(problem)
    return ClassifyRequest(
        task_id=task_id,
        head=head,
        text=text,
        request_id=_optional_id(kwargs.get("request_id")),
        enqueued_at=enqueued_at,
        heads=heads,
        fingerprint=fingerprint,
    )


def salvage(kwargs: Any) -> dict[str, Any]:
    """Best-effort head name, request id and enqueue time of a bad payload, for its error row.

    A ``heads`` list gives ``head_name`` NULL unless it holds exactly one string: the task's
    single error row then stands for the whole task.
    """
    if not isinstance(kwargs, dict):
        return {"item": None, "head_name": None, "request_id": None, "enqueued_at": None}
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
        # a ``texts`` task's whole-task error answers for every item: item NULL
        "item": None if "texts" in kwargs else 0,
        "head_name": clean_str(head, MAX_HEAD_NAME) if isinstance(head, str) else None,
        "request_id": clean_str(str(rid),
                                MAX_ID_CHARS) if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None,
        "enqueued_at": enqueued_at,
    }
