"""Labelled examples in Postgres (datasets), feedback on predictions, and the retrain set.

Every function takes an :class:`~sqlalchemy.engine.Engine`; writes run in one transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from embedclf.errors import DataError, DatasetNotFound, FeedbackError  # noqa: F401  (re-exported: defined in errors.py)
from embedclf.store.db import transaction
from embedclf.store.tables import datasets, examples, feedback, heads, predictions

#: rows per INSERT statement
CHUNK = 1000


def text_sha256(text: str) -> bytes:
    """The cache and dedupe key: sha256 of the exact UTF-8 text (lone surrogates kept)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    n_examples: int
    n_labels: int
    n_feedback: int
    created_at: dt.datetime
    created_by: str | None


@dataclass(frozen=True)
class ImportResult:
    dataset: str
    created: bool
    inserted: int
    duplicates: int


def import_examples(engine: Engine, name: str, texts: Sequence[str], labels: Sequence[str], *,
                    source: str = "import", created_by: str | None = None) -> ImportResult:
    """Add examples to dataset ``name`` (created if missing); exact duplicates are skipped."""
    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels")
    if not name.strip() or len(name) > 128:
        raise DataError("a dataset name must be 1-128 characters")
    rows, seen = [], set()
    for t, y in zip(texts, labels):
        if "\x00" in t or "\x00" in y:
            raise DataError("texts and labels cannot contain NUL characters")
        key = (text_sha256(t), y)
        if key not in seen:
            seen.add(key)
            rows.append({"text": t, "label": y, "text_sha256": key[0], "source": source, "created_by": created_by})
    inserted = 0
    with transaction(engine) as conn:
        res = conn.execute(
            pg_insert(datasets).values(name=name, created_by=created_by)
            .on_conflict_do_nothing(index_elements=["name"]).returning(datasets.c.id)
        ).first()
        created = res is not None
        ds_id = (res[0] if res is not None
                 else conn.execute(select(datasets.c.id).where(datasets.c.name == name)).scalar_one())
        for start in range(0, len(rows), CHUNK):
            chunk = [dict(r, dataset_id=ds_id) for r in rows[start : start + CHUNK]]
            stmt = pg_insert(examples).values(chunk).on_conflict_do_nothing(
                index_elements=["dataset_id", "text_sha256", "label"])
            inserted += conn.execute(stmt).rowcount
    return ImportResult(name, created, inserted, len(texts) - inserted)


def list_datasets(engine: Engine) -> list[DatasetInfo]:
    q = (
        select(datasets.c.name, datasets.c.created_at, datasets.c.created_by,
               func.count(examples.c.id).label("n"), func.count(func.distinct(examples.c.label)).label("k"),
               func.count(examples.c.id).filter(examples.c.source == "feedback").label("fb"))
        .select_from(datasets.outerjoin(examples, examples.c.dataset_id == datasets.c.id))
        .group_by(datasets.c.id).order_by(datasets.c.name)
    )
    with engine.connect() as conn:
        return [DatasetInfo(r.name, r.n, r.k, r.fb, r.created_at, r.created_by) for r in conn.execute(q)]


def fetch_examples(engine: Engine, name: str) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` of a dataset in insertion order."""
    with engine.connect() as conn:
        ds_id = conn.execute(select(datasets.c.id).where(datasets.c.name == name)).scalar()
        if ds_id is None:
            known = ", ".join(conn.execute(select(datasets.c.name).order_by(datasets.c.name)).scalars()) or "none"
            raise DatasetNotFound(f"no dataset {name!r} (datasets: {known})")
        rows = conn.execute(
            select(examples.c.text, examples.c.label).where(examples.c.dataset_id == ds_id).order_by(examples.c.id)
        ).all()
    return [r.text for r in rows], [r.label for r in rows]


def delete_dataset(engine: Engine, name: str) -> int:
    """Delete a dataset and its examples; returns the number of examples removed."""
    with transaction(engine) as conn:
        ds_id = conn.execute(select(datasets.c.id).where(datasets.c.name == name)).scalar()
        if ds_id is None:
            raise DatasetNotFound(f"no dataset {name!r}")
        n = conn.execute(select(func.count()).where(examples.c.dataset_id == ds_id)).scalar_one()
        conn.execute(delete(datasets).where(datasets.c.id == ds_id))
    return int(n)


def add_feedback(engine: Engine, task_id: str, label: str, head: str | None = None, *, note: str | None = None,
                 source: str = "cli", created_by: str | None = None) -> str:
    """Record the correct ``label`` for task ``task_id``; returns the head it applies to.

    The task must have a prediction row; ``head`` may be omitted when the task has exactly one
    head. The label must be one of that head's labels (any stored version).
    """
    with transaction(engine) as conn:
        names = sorted({r for r in conn.execute(
            select(predictions.c.head_name).where(predictions.c.task_id == task_id)).scalars()},
            key=lambda h: (h is None, h or ""))
        if not names:
            raise FeedbackError(f"no prediction for task {task_id!r}")
        named = [n for n in names if n is not None]
        if head is None:
            if len(named) != 1:
                choices = ", ".join(named) or "none"
                raise FeedbackError(f"task {task_id!r} has predictions of {len(named)} heads ({choices}): pass --head")
            head = named[0]
        elif head not in named:
            raise FeedbackError(f"task {task_id!r} has no prediction of head {head!r} "
                                f"(heads: {', '.join(named) or 'none'})")
        known: set[str] = set()
        for labels in conn.execute(select(heads.c.labels).where(heads.c.name == head)).scalars():
            known.update(labels)
        if label not in known:
            shown = ", ".join(sorted(known)[:10]) + (" ..." if len(known) > 10 else "")
            raise FeedbackError(f"{label!r} is not a label of head {head!r} (labels: {shown or 'none'})")
        values = {"task_id": task_id, "head_name": head, "label": label, "note": note, "source": source}
        if created_by is not None:
            values["created_by"] = created_by
        conn.execute(feedback.insert().values(**values))
    return head


def list_feedback(engine: Engine, head: str | None = None, limit: int | None = 50) -> list[dict]:
    """Feedback rows, newest first, with the prediction's label and text when there is one."""
    p = predictions
    q = (
        select(feedback.c.task_id, feedback.c.head_name, feedback.c.label, p.c.label.label("predicted"),
               p.c.text, feedback.c.note, feedback.c.source, feedback.c.created_at, feedback.c.created_by)
        .select_from(feedback.outerjoin(p, and_(p.c.task_id == feedback.c.task_id,
                                                p.c.head_name == feedback.c.head_name)))
        .order_by(feedback.c.created_at.desc(), feedback.c.id.desc())
    )
    if head is not None:
        q = q.where(feedback.c.head_name == head)
    if limit is not None:
        q = q.limit(limit)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def feedback_examples(engine: Engine, head: str) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` from feedback on ``head``: the latest label per task, joined to the prediction's text."""
    p = predictions
    latest = (
        select(feedback.c.task_id, feedback.c.label)
        .where(feedback.c.head_name == head)
        .distinct(feedback.c.task_id)
        .order_by(feedback.c.task_id, feedback.c.created_at.desc(), feedback.c.id.desc())
        .subquery()
    )
    q = (
        select(p.c.text, latest.c.label)
        .select_from(latest.join(p, and_(p.c.task_id == latest.c.task_id, p.c.head_name == head)))
        .where(and_(p.c.text.is_not(None), p.c.text != ""))
        .order_by(latest.c.task_id)
    )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return [r.text for r in rows], [r.label for r in rows]


def training_examples(engine: Engine, dataset: str, head: str | None = None) -> tuple[list[str], list[str], int]:
    """The retrain set: ``dataset``, plus feedback on ``head`` when given.

    Feedback is the corrected truth: a dataset example with the same text is replaced by it, and one
    text with feedback on several tasks counts once (latest task id order). Returns
    ``(texts, labels, n_feedback)``.
    """
    texts, labels = fetch_examples(engine, dataset)
    if head is None:
        return texts, labels, 0
    fb_texts, fb_labels = feedback_examples(engine, head)
    fixed = dict(zip(fb_texts, fb_labels))
    kept = [(t, y) for t, y in zip(texts, labels) if t not in fixed]
    out_t = [t for t, _ in kept] + list(fixed)
    out_y = [y for _, y in kept] + list(fixed.values())
    return out_t, out_y, len(fixed)
