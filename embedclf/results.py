"""What a task's result looks like to a producer: built from its rows. Pure (stdlib only).

One shape everywhere (Celery results, ``Client`` handles, the HTTP API): a result entry per row,

    {"status", "label", "score", "top3", "labels", "abstained", "head_name", "head_version", "item",
     "request_id", "error"}

and for a task with one text and one head the entry itself, else a list of entries in (item, head)
order. A task none of whose rows is ``ok`` failed as a whole: :class:`~embedclf.errors.ClassificationError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from embedclf.errors import ClassificationError

RESULT_FIELDS = ("status", "label", "score", "top3", "labels", "abstained", "head_name", "head_version", "item",
                 "request_id", "error")


def entries(rows: Iterable[dict]) -> list[dict]:
    """Result entries of a task's rows, in (item, head) order (a whole-task row first)."""
    ordered = sorted(rows, key=lambda r: (-1 if r.get("item") is None else r["item"], r.get("head_name") or ""))
    return [{k: r.get(k) for k in RESULT_FIELDS} for r in ordered]


def failure(values: Sequence[dict]) -> ClassificationError | None:
    """The error of a task none of whose rows is ``ok`` (None when one is)."""
    if not values or any(v["status"] == "ok" for v in values):
        return None
    more = f" (and {len(values) - 1} more error rows)" if len(values) > 1 else ""
    return ClassificationError((values[0]["error"] or "error") + more)


def task_value(values: list[dict], single: bool) -> dict | list[dict]:
    """The task's result: the entry itself for one text and one head, else the list."""
    return values[0] if single and len(values) == 1 else values


def for_item(value: Any, item: int) -> dict | list[dict]:
    """The part of a task's result that answers text ``item``: its entry (one head) or its entries.

    Entries for the whole task (item None) answer every text.
    """
    values = value if isinstance(value, list) else [value]
    mine = [v for v in values if v.get("item") in (item, None)]
    return mine[0] if len(mine) == 1 else mine
