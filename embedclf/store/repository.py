"""Reads and writes of heads and predictions. Connections are passed in.

Every public function takes an :class:`~sqlalchemy.engine.Engine` and runs in
one transaction (see :func:`embedclf.store.db.transaction`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Engine

from embedclf.errors import HeadNotFound, HeadStateError  # noqa: F401  (re-exported: defined in errors.py)
from embedclf.heads.checkpoint import HeadArtifact, config_from_dict
from embedclf.store.db import transaction
from embedclf.store.tables import head_events, heads, predictions


@dataclass(frozen=True)
class HeadVersion:
    name: str
    version: int
    embedder_id: str
    labels: list[str]
    is_active: bool
    created_at: dt.datetime
    created_by: str | None
    metrics: dict
    n_train: int | None


def _version(row: Any) -> HeadVersion:
    return HeadVersion(
        row.name, row.version, row.embedder_id, list(row.labels), row.is_active,
        row.created_at, row.created_by, dict(row.metrics or {}), row.n_train,
    )


_META_COLS = [
    heads.c.name, heads.c.version, heads.c.embedder_id, heads.c.labels, heads.c.is_active,
    heads.c.created_at, heads.c.created_by, heads.c.metrics, heads.c.n_train,
]


def add_head_version(
    engine: Engine,
    name: str,
    artifact: HeadArtifact,
    *,
    activate: bool = True,
    created_by: str | None = None,
    data_fingerprint: str | None = None,
    n_train: int | None = None,
) -> int:
    """Store a new version of head ``name``; returns its version number."""
    with transaction(engine) as conn:
        # serialise concurrent trainings of the same name
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))
        version = (conn.execute(select(func.max(heads.c.version)).where(heads.c.name == name)).scalar() or 0) + 1
        conn.execute(
            insert(heads).values(
                name=name,
                version=version,
                embedder_id=artifact.embedder_id,
                dim=artifact.config.input_dim,
                labels=artifact.labels,
                config=artifact.config.to_dict(),
                train_params=artifact.train_params,
                metrics=artifact.metrics,
                weights=artifact.weights,
                data_fingerprint=data_fingerprint,
                n_train=n_train,
                created_by=created_by,
            )
        )
        if activate:
            _activate(conn, name, version, "activate", created_by)
    return version


#: up to this many head names are listed in a "does not exist" error
LIST_NAMES_UP_TO = 10


def missing_head(name: str, names: Sequence[str]) -> HeadNotFound:
    """The error for a head NAME that does not exist, naming the heads that do (when few)."""
    if not names:
        known = "no heads yet: train one with `embedclf heads train`"
    elif len(names) <= LIST_NAMES_UP_TO:
        known = "heads: " + ", ".join(names)
    else:
        known = f"{len(names)} heads: see `embedclf heads list`"
    return HeadNotFound(f"head {name!r} does not exist ({known})")


def _names(conn: Any) -> list[str]:
    return list(conn.execute(select(heads.c.name).distinct().order_by(heads.c.name)).scalars())


def _not_found(conn: Any, name: str, what: str) -> HeadNotFound:
    """``head NAME has WHAT`` when the head exists, else that it does not exist."""
    names = _names(conn)
    return HeadNotFound(f"head {name!r} has {what}") if name in names else missing_head(name, names)


def head_names(engine: Engine) -> list[str]:
    """Every head name with at least one stored version, sorted."""
    with engine.connect() as conn:
        return _names(conn)


def _activate(conn: Any, name: str, version: int, action: str, by: str | None) -> None:
    conn.execute(update(heads).where(and_(heads.c.name == name, heads.c.is_active)).values(is_active=False))
    res = conn.execute(
        update(heads)
        .where(and_(heads.c.name == name, heads.c.version == version))
        .values(is_active=True, activated_at=func.now())
    )
    if res.rowcount != 1:
        raise _not_found(conn, name, f"no version {version}")
    conn.execute(insert(head_events).values(name=name, version=version, action=action, by=by))


def activate(engine: Engine, name: str, version: int, by: str | None = None) -> None:
    with transaction(engine) as conn:
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))
        _activate(conn, name, version, "activate", by)


def rollback(engine: Engine, name: str, by: str | None = None) -> int:
    """Re-activate the version that was active before the current one."""
    with transaction(engine) as conn:
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))
        current = conn.execute(
            select(heads.c.version).where(and_(heads.c.name == name, heads.c.is_active))
        ).scalar()
        if current is None:
            raise _not_found(conn, name, "no active version")
        existing = set(conn.execute(select(heads.c.version).where(heads.c.name == name)).scalars())
        history = conn.execute(
            select(head_events.c.version).where(head_events.c.name == name).order_by(head_events.c.id.desc())
        ).scalars().all()
        # walk back past the current version (and repeats of it) to the one before
        target = next((v for v in history if v != current and v in existing), None)
        if target is None:
            raise HeadStateError(f"head {name!r} has no earlier version to roll back to")
        _activate(conn, name, target, "rollback", by)
        return target


def delete_version(engine: Engine, name: str, version: int) -> None:
    """Delete an inactive version; the active one is refused (activate another first)."""
    with transaction(engine) as conn:
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))
        active = conn.execute(
            select(heads.c.is_active).where(and_(heads.c.name == name, heads.c.version == version))
        ).scalar()
        if active is None:
            raise _not_found(conn, name, f"no version {version}")
        if active:
            raise HeadStateError(f"head {name!r} version {version} is active; activate another version first")
        conn.execute(delete(heads).where(and_(heads.c.name == name, heads.c.version == version)))


def list_heads(engine: Engine, name: str | None = None) -> list[HeadVersion]:
    q = select(*_META_COLS).order_by(heads.c.name, heads.c.version)
    if name is not None:
        q = q.where(heads.c.name == name)
    with engine.connect() as conn:
        return [_version(r) for r in conn.execute(q)]


def active_versions(engine: Engine) -> dict[str, int]:
    """``{name: version}`` of every active head: the cheap query workers poll."""
    with engine.connect() as conn:
        rows = conn.execute(select(heads.c.name, heads.c.version).where(heads.c.is_active))
        return {r.name: r.version for r in rows}


def load_head(engine: Engine, name: str, version: int | None = None) -> tuple[HeadVersion, HeadArtifact]:
    """A head version's metadata and artifact; the active version when ``version`` is None."""
    cond = heads.c.is_active if version is None else heads.c.version == version
    with engine.connect() as conn:
        row = conn.execute(
            select(*_META_COLS, heads.c.config, heads.c.weights, heads.c.train_params).where(
                and_(heads.c.name == name, cond)
            )
        ).first()
        if row is None:
            raise _not_found(conn, name, "no active version" if version is None else f"no version {version}")
    artifact = HeadArtifact(
        config=config_from_dict(dict(row.config)),
        labels=list(row.labels),
        embedder_id=row.embedder_id,
        weights=bytes(row.weights),
        metrics=dict(row.metrics or {}),
        train_params=dict(row.train_params or {}),
    )
    return _version(row), artifact


def write_predictions(engine: Engine, rows: Sequence[dict]) -> int:
    """Insert result rows in one statement; returns how many were inserted.

    One row per (task_id, item, head_name): a row already stored is skipped (see
    :func:`embedclf.store.results.write_results`, which also reports reused task ids).
    """
    from embedclf.store.results import write_results

    return write_results(engine, rows).inserted


def query_predictions(
    engine: Engine,
    *,
    head: str | None = None,
    status: str | None = None,
    request_id: str | None = None,
    task_ids: Iterable[str] | None = None,
    label: str | None = None,
    since: dt.datetime | None = None,
    limit: int | None = 20,
) -> list[dict]:
    cols = [c for c in predictions.c if c.name not in ("id", "fingerprint")]
    q = select(*cols).order_by(predictions.c.completed_at.desc(), predictions.c.id.desc())
    if head is not None:
        q = q.where(predictions.c.head_name == head)
    if status is not None:
        q = q.where(predictions.c.status == status)
    if request_id is not None:
        q = q.where(predictions.c.request_id == request_id)
    if task_ids is not None:
        q = q.where(predictions.c.task_id.in_(list(task_ids)))
    if label is not None:
        q = q.where(predictions.c.label == label)
    if since is not None:
        q = q.where(predictions.c.completed_at >= since)
    if limit is not None:
        q = q.limit(limit)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def count_predictions(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(predictions.c.status, func.count()).group_by(predictions.c.status))
        return {status: n for status, n in rows}
