"""From a raw queue entry to what a batch needs: a request, or the error rows that answer it.

Runs on the receive thread. Never raises: every entry becomes a :class:`Received` whose
``request`` is classified, or whose ``errors`` are written as they are.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from embedclf.classify import error_row
from embedclf.envelope import Decoded, decode, kwargs_repr, sha1_task_id, task_id_from_tail
from embedclf.payload import TASK_NAME, ClassifyRequest, PayloadError, parse_request, salvage
from worker.inflight import Entry

#: an ETA this far in the future is refused (countdown/eta are not supported; a little clock skew is)
ETA_SLACK_S = 5.0


@dataclass(frozen=True)
class IntakeLimits:
    max_payload_bytes: int
    max_text_chars: int
    max_texts: int
    max_attempts: int


@dataclass(slots=True)
class Received:
    entry: Entry
    received_at: dt.datetime
    task_id: str
    request: ClassifyRequest | None = None
    #: rows that answer the whole task when it cannot be classified
    errors: list[dict] = field(default_factory=list)
    fingerprint: str | None = None
    tokens: int = 0
    task_name: str | None = None
    #: the decoded kwargs (for monitoring summaries and results)
    kwargs: Any = None
    #: protocol 2's embed (callbacks, errbacks, chain, chord) and the message headers
    embed: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)

    @property
    def n_texts(self) -> int:
        return self.request.n_texts if self.request is not None else 1

    @property
    def tag(self) -> int:
        return self.entry.tag

    @property
    def summary(self) -> str:
        """What monitoring may show of the kwargs: heads and sizes, never the texts."""
        return kwargs_repr(self.kwargs)


def fingerprint(kwargs: Any) -> str | None:
    """Hash of what a task asks (heads, texts, request ids), not of when it was sent."""
    if not isinstance(kwargs, dict):
        return None
    what = (kwargs.get("head"), kwargs.get("heads"), kwargs.get("text"), kwargs.get("texts"),
            kwargs.get("request_id"), kwargs.get("request_ids"))
    try:
        blob = repr(what).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError):
        return None
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)


def _give_up(task_id: str, kwargs: Any, deaths: int, request: ClassifyRequest | None) -> list[dict]:
    message = (f"gave up after {deaths} failed attempts: the worker died while processing this task "
               "(crash, out of memory or kill)")
    if request is None:
        return [error_row(task_id, message, **salvage(kwargs))]
    item = None if request.multi else 0
    return [error_row(task_id, message, item=item, head_name=h, request_id=request.request_id,
                      enqueued_at=request.enqueued_at) for h in request.heads]


def _whole(out: Received, message: str) -> Received:
    """``out`` answered by one error row that stands for the whole task."""
    out.errors = [error_row(out.task_id, message, fingerprint=out.fingerprint, **salvage(out.kwargs))]
    return out


def intake(entry: Entry, limits: IntakeLimits, now: dt.datetime | None = None,
           count_tokens: Callable[[str], int | None] | None = None,
           revoked: Collection[str] = ()) -> Received:
    """Decode and validate one entry (see the module doc)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if entry.raw is None:  # over the size limit: Redis returned its size, SHA-1 and last 4 KB only
        tid = task_id_from_tail(entry.tail) or sha1_task_id(entry.sha1 or "")
        msg = f"message is {entry.size} bytes (max {limits.max_payload_bytes}, EMBEDCLF_MAX_PAYLOAD_BYTES); not decoded"
        return Received(entry, now, tid, errors=[error_row(tid, msg, item=None)])
    d: Decoded = decode(entry.raw, limits.max_payload_bytes)
    out = Received(entry, now, d.task_id, task_name=d.task_name if isinstance(d.task_name, str) else None,
                   kwargs=d.kwargs, embed=d.embed, headers=d.headers,
                   fingerprint=fingerprint(d.kwargs) if d.ok else None)

    if not d.ok:
        return _whole(out, d.error or "malformed message")
    if d.task_name != TASK_NAME:
        return _whole(out, f"unknown task {str(d.task_name)[:100]!r}: this queue serves {TASK_NAME!r} only")
    if revoked and d.task_id in revoked:
        return _whole(out, "revoked (celery control revoke) before it ran")
    h = d.headers
    if h.get("expires") is not None or h.get("eta") is not None:
        expires = _parse_time(h.get("expires"))
        if expires is not None and expires < now:
            return _whole(out, f"expired at {expires.isoformat()} before it ran")
        eta = _parse_time(h.get("eta"))
        if eta is not None and (eta - now).total_seconds() > ETA_SLACK_S:
            return _whole(out, "eta/countdown is not supported: embedclf tasks run as soon as a worker receives them")
    try:
        request = parse_request(d.task_id, d.args, d.kwargs, limits.max_text_chars, limits.max_texts,
                                fingerprint=out.fingerprint)
    except PayloadError as exc:
        request = None
        problem = str(exc)
    if entry.deaths >= limits.max_attempts:
        out.errors = _give_up(d.task_id, d.kwargs, entry.deaths, request)
        for row in out.errors:
            row["fingerprint"] = out.fingerprint
        return out
    if request is None:
        return _whole(out, problem)
    out.request = request
    if count_tokens is not None:
        out.tokens = sum(count_tokens(it.text) or 0 for it in request.items)
    return out
