"""``POST /v1/classify`` bodies: validated with the task contract's own rules before anything is enqueued.

Pure (orjson and the standard library). :func:`parse_body` turns the raw body into a
:class:`Submission` or raises :class:`ApiError` (a 4xx with a JSON body). The HTTP API is stricter than
the queue in one way: a ``texts`` list with a bad text is refused as a whole (422 listing every bad
item) instead of getting an error row for that text, since the caller is there to be told.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from embedclf.errors import ApiError  # noqa: F401  (re-exported: defined in errors.py)
from embedclf.payload import PayloadError, parse_request

#: body fields of the HTTP API itself (the rest is the task's kwargs)
HTTP_FIELDS = ("wait", "timeout_s")
#: task kwargs an HTTP caller may send (``enqueued_at`` is set by the server)
TASK_FIELDS = ("head", "heads", "text", "texts", "request_id", "request_ids")
#: seconds a ``wait: true`` request waits unless it says otherwise, and the most it may ask for
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 300.0


def invalid(message: str, **extra: Any) -> ApiError:
    return ApiError(422, "invalid_request", message, **extra)


@dataclass(frozen=True)
class Submission:
    """A valid request: what to enqueue and how to answer."""

    #: ``str`` for ``head``, ``list`` for ``heads`` (sent on as given)
    head: str | list[str]
    texts: list[str]
    request_ids: list[str | int | None] | None
    #: sent as ``texts=[...]`` (the result is a list even for one text)
    multi: bool
    wait: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    heads: tuple[str, ...] = field(default=())

    @property
    def single(self) -> bool:
        """One text and one head: the result is one entry, not a list (as for a Celery result)."""
        return not self.multi and len(self.heads) == 1


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<something>+json`` (parameters such as charset allowed)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _loads(body: bytes) -> Any:
    import orjson

    if not body.strip():
        raise ApiError(400, "invalid_json", "the body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8, NaN, integers beyond 64 bits, deep nesting
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {' '.join(str(exc).split())[:200]}") \
            from None


def _timeout(value: Any) -> float:
    if value is None:
        return DEFAULT_TIMEOUT_S
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(f"'timeout_s' must be a number of seconds, got {type(value).__name__}")
    if not 0 < value <= MAX_TIMEOUT_S:
        raise invalid(f"'timeout_s' must be > 0 and <= {MAX_TIMEOUT_S:g} seconds, got {value:g}")
    return float(value)


def parse_body(body: bytes, max_text_chars: int, max_texts: int) -> Submission:
    """The submission in ``body``; raises :class:`ApiError` (400 or 422) when it cannot be enqueued."""
    obj = _loads(body)
    if not isinstance(obj, dict):
        raise invalid(f"the body must be a JSON object, got {type(obj).__name__}")
    wait = obj.get("wait", False)
    if not isinstance(wait, bool):
        raise invalid(f"'wait' must be true or false, got {type(wait).__name__}")
    timeout_s = _timeout(obj.get("timeout_s"))
    extra = sorted(k for k in obj if k not in TASK_FIELDS and k not in HTTP_FIELDS)
    if extra:
        shown = ", ".join(repr(k[:60]) for k in extra[:10]) + (" ..." if len(extra) > 10 else "")
        raise invalid(f"unexpected field(s): {shown} (allowed: {', '.join(TASK_FIELDS + HTTP_FIELDS)})")
    kwargs = {k: v for k, v in obj.items() if k in TASK_FIELDS}
    try:
        req = parse_request("http", (), kwargs, max_text_chars, max_texts)
    except PayloadError as exc:
        raise invalid(str(exc)) from None
    if req.bad:
        errors = [{"item": b.item, "error": b.error} for b in req.bad]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise invalid(f"{errors[0]['error']}{more}", errors=errors)
    if req.multi:
        texts = [i.text for i in req.items]
        rids = kwargs.get("request_ids")
        request_ids = None if rids is None else list(rids)
    else:
        texts = [kwargs["text"]]
        request_ids = None if kwargs.get("request_id") is None else [kwargs["request_id"]]
    head: str | list[str] = list(kwargs["heads"]) if "heads" in kwargs else kwargs["head"]
    return Submission(head=head, texts=texts, request_ids=request_ids, multi=req.multi, wait=wait,
                      timeout_s=timeout_s, heads=req.heads)
