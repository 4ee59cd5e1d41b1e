"""The workers' write path: a batch's result rows in one statement, idempotent, and task-id reuse detection.

Rows go in with one ``INSERT … SELECT FROM jsonb_array_elements(<the batch as one JSON array of
arrays>)``: one round trip and one statement whatever the batch size, and no SQL text built per row
(measured here: 2.5–4× the rows/s of one array parameter per column, whose client-side quoting cost
about 30 µs per row). Where the batch's tasks have several rows each (multi-text tasks), the values the
rows of one task and head share (task id, head, version, times, worker, fingerprint) go once per such
group, and each row names its group: half the JSON for the server to parse.

The common write is a plain INSERT that only counts its rows: when that is all of them, their keys are
the batch's own. When a row exists already (a redelivery, a reused id: rare), the INSERT fails with a
unique violation (or counts fewer rows, for a reused id it skipped); the transaction is rolled back and
the write made again with ``ON CONFLICT DO NOTHING``, returning the keys that went in. (``ON CONFLICT``
on every write probes the unique index once more for every row.)

Every row carries its task's *fingerprint* (a hash of the task's heads, texts and request ids).
A redelivered message has the same fingerprint as the rows it already wrote and is a no-op. A
*different* task that reuses an existing task id (other texts, heads or request ids) writes none
of its rows under that id: it is recorded in ``task_conflicts`` (and reported to the caller, which
logs it and counts it in a metric), so neither task's rows are silently mixed with or replaced by
the other's. The check is one index probe per task of the batch (``task_id`` leads the unique
index). Two different tasks with the same id written at the same instant by two workers can
both pass it; rows with the same key are then still written once, and the rest are mixed.

In the same round trip the batch's task ids are sent with ``NOTIFY embedclf_results`` (delivered when
the transaction commits), so producers can wait for rows without polling (``embedclf/waiter.py``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from embedclf.store.db import transaction

try:
    from orjson import dumps as _dumps
except ImportError:  # pragma: no cover - optional speed-up
    def _dumps(obj: Any, /) -> bytes:  # type: ignore[misc]  # orjson's signature has more optional arguments
        return json.dumps(obj, default=str).encode()

#: (column, type in the JSON record)
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("task_id", "text"), ("item", "int"), ("head_name", "text"), ("request_id", "text"),
    ("head_version", "int"), ("embedder_id", "text"), ("label", "text"), ("score", "float8"),
    ("top3", "jsonb"), ("labels", "jsonb"), ("status", "text"), ("error", "text"), ("text", "text"),
    ("enqueued_at", "timestamptz"), ("received_at", "timestamptz"), ("worker", "text"),
    ("abstained", "bool"), ("fingerprint", "hex"),
)
_NAME_LIST = tuple(c for c, _ in _COLUMNS)
_NAMES = ", ".join(_NAME_LIST)
#: the values the rows of one task for one head share: a batch whose tasks have several rows each
#: (multi-text tasks) sends them once per such group, and each row its group's index and its own values
_SHARED: tuple[tuple[str, str], ...] = tuple((c, t) for c, t in _COLUMNS if c in {
    "task_id", "head_name", "head_version", "embedder_id", "enqueued_at", "received_at", "worker", "fingerprint"})
_OWN: tuple[tuple[str, str], ...] = tuple(ct for ct in _COLUMNS if ct not in _SHARED)
_SHARED_NAMES = tuple(c for c, _ in _SHARED)
_OWN_NAMES = tuple(c for c, _ in _OWN)
#: batches committed together (see ``write_results``) keep distinct ``completed_at``: the caller's
#: time (a worker's, unique per batch in its process: see worker/writer.py) or else the transaction's,
#: plus the batch's ordinal in microseconds, so (worker, completed_at) still names one batch
_COMPLETED = "coalesce(%(at)s::timestamptz, now()) + coalesce(n.batch, 0) * interval '1 microsecond'"


def _field(i: int, kind: str) -> str:
    """Element ``i`` of a record's JSON array as a column of ``kind`` (a JSON null is SQL NULL; ``hex``: a
    hex string as bytea)."""
    if kind == "jsonb":
        return f"nullif(e->{i}, 'null'::jsonb)"
    if kind == "hex":
        return f"decode(e->>{i}, 'hex')"
    return f"e->>{i}" if kind == "text" else f"(e->>{i})::{kind}"


def _records(columns: tuple[tuple[str, str], ...], param: str, kind: str = "rows") -> str:
    """A subquery reading ``columns`` by position from each element of the JSON array ``param``. ``kind``:
    ``rows`` (then the batch ordinal), ``grouped`` (first the row's group index ``gi``, then as ``rows``),
    ``groups`` (``gi`` is the element's own index)."""
    shift = 1 if kind == "grouped" else 0
    cols = {"rows": [], "grouped": ["(e->>0)::int AS gi"], "groups": ["(o - 1)::int AS gi"]}[kind]
    cols += [f"{_field(i + shift, t)} AS {c}" for i, (c, t) in enumerate(columns)]
    if kind != "groups":
        cols.append(f"{_field(len(columns) + shift, 'int')} AS batch")
    alias = " WITH ORDINALITY AS x(e, o)" if kind == "groups" else " AS e"
    elements = f"jsonb_array_elements(%({param})s::jsonb){alias}"
    # OFFSET 0 keeps the planner from pulling the groups' subquery up into the join, which would evaluate its
    # columns (two timestamps parsed, a hex string decoded) for every row instead of once per group
    return f"(SELECT {', '.join(cols)} FROM {elements}{' OFFSET 0' if kind == 'groups' else ''})"


#: each row is a JSON array, its values in ``_COLUMNS`` order (then the batch ordinal, when there is one):
#: Postgres reads an element by position; ``json_to_recordset`` looks every key up by name, which cost
#: the server 16.4–17.2 µs a row for these 18 columns against 8.6–9.8 µs for the same values by position
#: (docs/benchmarks.md, seventeenth VM). Grouped: ``groups`` holds each group's ``_SHARED`` values, each row
#: is [its group's index, its ``_OWN`` values (, batch ordinal)].
_SOURCES = {
    False: f"{_records(_COLUMNS, 'rows')} AS n",
    True: (f"{_records(_OWN, 'rows', 'grouped')} AS n "
           f"JOIN {_records(_SHARED, 'groups', 'groups')} AS g ON g.gi = n.gi"),
}

#: the batch's tasks as one JSON array of [task id, fingerprint] (two text arrays cost psycopg2 2.4 µs of client
#: CPU a task to adapt, element by element; one JSON string 0.2): those whose id the table holds for other content
_REUSED = """
reused AS (
    SELECT t.task_id FROM (SELECT e->>0 AS task_id, e->>1 AS fp FROM jsonb_array_elements(%(tasks)s::jsonb) AS e) t
    CROSS JOIN LATERAL (SELECT 1 FROM predictions p WHERE p.task_id = t.task_id
                        AND p.fingerprint IS DISTINCT FROM decode(t.fp, 'hex') LIMIT 1) x
)"""


def _rows_sql(grouped: bool, on_conflict: bool) -> str:
    """The INSERT of the rows (``grouped``: as :func:`insert_params` sends a batch of multi-row groups)."""
    def ref(c: str) -> str:
        return ("g." if grouped and c in _SHARED_NAMES else "n.") + c
    select = {"abstained": "coalesce(n.abstained, false)"}
    return (f"\nINSERT INTO predictions ({_NAMES}, completed_at)\n"
            f"SELECT {', '.join(select.get(c, ref(c)) for c in _NAME_LIST)}, {_COMPLETED}\n"
            f"FROM {_SOURCES[grouped]}\nWHERE {ref('task_id')} NOT IN (SELECT task_id FROM reused)"
            + ("\nON CONFLICT (task_id, item, head_name) DO NOTHING" if on_conflict else ""))


#: the common write: a plain INSERT whose rows are only counted. When every row went in, their keys are the
#: rows' own (sending each key back cost ~15 % of a 2,048-row write here); a row that exists already fails it
#: with a unique violation (``ON CONFLICT`` would probe the unique index once more for every row: ~8 % of the
#: server's time a row, docs/benchmarks.md, twentieth VM)
_INSERT_COUNT = {g: f"WITH {_REUSED}, ins AS ({_rows_sql(g, False)}\nRETURNING 1)\nSELECT count(*) FROM ins\n"
                 for g in (False, True)}
#: when some rows did not go in (a redelivery, a reused id), the write is rolled back and made again with this
_INSERT_KEYS = {g: f"WITH {_REUSED}{_rows_sql(g, True)}\nRETURNING task_id, item, head_name\n" for g in (False, True)}

#: Postgres's SQLSTATE for a unique violation
UNIQUE_VIOLATION = "23505"

#: channel the workers NOTIFY with the task ids of every batch they commit (see embedclf/waiter.py)
NOTIFY_CHANNEL = "embedclf_results"
#: NOTIFY payloads must stay under 8000 bytes
_NOTE_BYTES = 7000
# sent in the same round trip as the INSERT; delivered to listeners only when the transaction commits
_NOTIFY = f"SELECT pg_notify('{NOTIFY_CHANNEL}', n) FROM unnest(%(notes)s::text[]) AS n;\n"

_EXISTING = """
SELECT DISTINCT task_id, encode(fingerprint, 'hex') FROM predictions WHERE task_id = ANY(%(ids)s::text[])
"""

_CONFLICT = """
INSERT INTO task_conflicts (task_id, fingerprint, existing_fingerprint, heads, n_texts, request_id, worker)
SELECT task_id, decode(fp, 'hex'), decode(old, 'hex'), heads, n, rid, w
FROM json_to_recordset(%(rows)s::json) AS c(task_id text, fp text, old text, heads jsonb, n int, rid text, w text)
"""


@dataclass(frozen=True)
class Conflict:
    """A task whose id was already used by a different task; none of its rows were written."""

    task_id: str
    fingerprint: str | None
    existing_fingerprint: str | None
    heads: list[str]
    n_texts: int
    request_id: str | None
    worker: str | None


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    #: rows skipped because a row with the same key and the same task content exists (redeliveries)
    duplicates: int
    conflicts: list[Conflict]
    #: keys (task_id, item, head_name) of the rows inserted
    inserted_keys: set[tuple[str, int | None, str | None]]


def notes(task_ids: Sequence[str]) -> list[str]:
    """The task ids as NOTIFY payloads (newline-separated, each under 8000 bytes)."""
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for tid in task_ids:
        n = len(tid.encode("utf-8")) + 1
        if cur and size + n > _NOTE_BYTES:
            out.append("\n".join(cur))
            cur, size = [], 0
        cur.append(tid)
        size += n
    if cur:
        out.append("\n".join(cur))
    return out


def insert_params(rows: Sequence[dict], batches: Sequence[int] | None = None,
                  completed_at: dt.datetime | None = None) -> dict[str, Any]:
    """The statement's parameters: the rows as JSON arrays (see ``_SOURCES``), each task's fingerprint once,
    the notes, the first batch's ``completed_at`` (None: now()), and ``grouped``: whether the rows went as
    groups, which they do when the batch's tasks have two rows or more on average (multi-text tasks)."""
    tasks: dict[str, Any] = {}
    for row in rows:
        tasks.setdefault(row["task_id"], row.get("fingerprint"))
    grouped = 2 * len(tasks) <= len(rows)
    if grouped:
        groups: dict[tuple, int] = {}
        values = []
        for row in rows:
            key = tuple(map(row.get, _SHARED_NAMES))
            gi = groups.get(key)
            if gi is None:
                gi = groups[key] = len(groups)
            values.append([gi, *map(row.get, _OWN_NAMES)])
    else:
        values = [list(map(row.get, _NAME_LIST)) for row in rows]
    if batches is not None and any(batches):
        for v, b in zip(values, batches):
            v.append(b)
    params = {"rows": _dumps(values).decode("utf-8"), "tasks": _dumps(list(tasks.items())).decode("utf-8"),
              "notes": notes(list(tasks)), "at": completed_at, "grouped": grouped}
    if grouped:
        params["groups"] = _dumps(list(groups)).decode("utf-8")
    return params


def _conflict(rows: list[dict], existing: str | None) -> Conflict:
    first = rows[0]
    return Conflict(task_id=first["task_id"], fingerprint=first.get("fingerprint"), existing_fingerprint=existing,
                    heads=sorted({r["head_name"] for r in rows if r.get("head_name")}),
                    n_texts=len({r.get("item") for r in rows}), request_id=first.get("request_id"),
                    worker=first.get("worker"))


def write_results(engine: Engine, rows: Sequence[dict], sizes: Sequence[int] | None = None,
                  completed_at: dt.datetime | None = None) -> WriteResult:
    """Insert a batch's rows in one statement (one transaction); see the module doc.

    ``sizes``: ``rows`` are several batches committed together, of these many rows each, in order;
    each batch's rows get their own ``completed_at`` (one microsecond apart), starting at
    ``completed_at`` (timezone-aware; None: the transaction's start, ``now()``).
    Rows of the same (task_id, item, head_name) inside ``rows`` are written once. Two tasks of the
    same id but different content inside one batch: the first is written, the second is a conflict.
    Rows must be valid (no NUL characters): one bad row fails the whole statement.
    """
    if not rows:
        return WriteResult(0, 0, [], set())
    ordinal = None if sizes is None else [i for i, n in enumerate(sizes) for _ in range(n)]
    if ordinal is not None and len(ordinal) != len(rows):
        raise ValueError(f"batch sizes add up to {len(ordinal)} rows, got {len(rows)}")
    first_fp: dict[str, Any] = {}
    later: dict[tuple[str, Any], list[dict]] = {}  # another task's rows under an id already in this batch
    seen: set[tuple] = set()
    unique = []
    batches: list[int] = []
    for i, row in enumerate(rows):
        tid, fp = row["task_id"], row.get("fingerprint")
        if first_fp.setdefault(tid, fp) != fp:
            later.setdefault((tid, fp), []).append(row)
            continue
        key = (tid, row.get("item"), row.get("head_name"))
        if key not in seen:
            seen.add(key)
            unique.append(row)
            batches.append(0 if ordinal is None else ordinal[i])
    conflicts = [_conflict(group, first_fp[tid]) for (tid, _), group in later.items()]
    try:
        return _insert(engine, unique, batches, first_fp, list(conflicts), completed_at, count_only=True, keys=seen)
    except IntegrityError as exc:
        if getattr(exc.orig, "pgcode", None) != UNIQUE_VIOLATION:
            raise
        # a row that exists already (a redelivery, a reused id): rolled back; written again as below
        return _insert(engine, unique, batches, first_fp, conflicts, completed_at, count_only=False)
    except _NotAllInserted:  # rolled back; written again, this time learning which keys went in
        return _insert(engine, unique, batches, first_fp, conflicts, completed_at, count_only=False)


class _NotAllInserted(Exception):
    """Some rows of a count-only write already existed: roll it back and write again, returning keys."""


def _insert(engine: Engine, unique: list[dict], batches: list[int], first_fp: dict[str, Any],
            conflicts: list[Conflict], completed_at: dt.datetime | None, count_only: bool,
            keys: set[tuple] | None = None) -> WriteResult:
    """``keys``: the keys of ``unique`` (with ``count_only``: when every row went in, they are the keys inserted)."""
    with transaction(engine) as conn:
        params = insert_params(unique, batches, completed_at)  # all zeros (one batch): the rows go as they are
        grouped = params.pop("grouped")
        if count_only:
            if conn.exec_driver_sql(_NOTIFY + _INSERT_COUNT[grouped], params).scalar_one() != len(unique):
                raise _NotAllInserted
            inserted = keys if keys is not None else {(r["task_id"], r.get("item"), r.get("head_name")) for r in unique}
            missing: list[dict] = []
        else:
            inserted = {(t, i, h) for t, i, h in conn.exec_driver_sql(_NOTIFY + _INSERT_KEYS[grouped], params).all()}
            missing = [r for r in unique if (r["task_id"], r.get("item"), r.get("head_name")) not in inserted]
        reused: set[str] = set()
        if missing:
            ids = sorted({r["task_id"] for r in missing})
            existing: dict[str, set[str | None]] = {}
            for tid, fp in conn.exec_driver_sql(_EXISTING, {"ids": ids}):
                existing.setdefault(tid, set()).add(fp)
            for tid in ids:
                others = existing.get(tid, set()) - {first_fp[tid]}
                if others:
                    reused.add(tid)
                    conflicts.append(_conflict([r for r in missing if r["task_id"] == tid],
                                               sorted(o or "" for o in others)[0] or None))
        if conflicts:
            conn.exec_driver_sql(_CONFLICT, {"rows": _dumps([
                {"task_id": c.task_id, "fp": c.fingerprint, "old": c.existing_fingerprint, "heads": c.heads,
                 "n": c.n_texts, "rid": c.request_id, "w": c.worker} for c in conflicts]).decode("utf-8")})
    dupes = sum(1 for r in missing if r["task_id"] not in reused)
    return WriteResult(len(inserted), dupes, conflicts, inserted)
