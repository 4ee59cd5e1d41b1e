"""All tables, in one place. Alembic migrations in ``migrations/`` create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: one row per trained head version; weights are safetensors bytes, never pickle
heads = Table(
    "heads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("embedder_id", Text, nullable=False),
    Column("dim", Integer, nullable=False),
    Column("labels", JSONB, nullable=False),
    Column("config", JSONB, nullable=False),
    Column("train_params", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("metrics", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("weights", LargeBinary, nullable=False),
    Column("data_fingerprint", Text),
    Column("n_train", Integer),
    Column("is_active", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_by", Text),
    Column("activated_at", DateTime(timezone=True)),
    UniqueConstraint("name", "version", name="uq_heads_name_version"),
    CheckConstraint("version >= 1", name="version_positive"),
)
# at most one active version per head name
Index("uq_heads_active_name", heads.c.name, unique=True, postgresql_where=heads.c.is_active)

#: audit trail of activations; rollback walks it backwards
head_events = Table(
    "head_events",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("action", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("by", Text),
    CheckConstraint("action in ('activate', 'rollback')", name="action_known"),
)

#: one row per task: the result an analyst queries
predictions = Table(
    "predictions",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("task_id", Text, nullable=False),
    Column("request_id", Text),
    Column("head_name", Text),
    Column("head_version", Integer),
    Column("embedder_id", Text),
    Column("label", Text),
    Column("score", Float),
    Column("top3", JSONB),
    Column("status", Text, nullable=False),
    Column("error", Text),
    Column("text", Text),
    Column("enqueued_at", DateTime(timezone=True)),
    Column("received_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("worker", Text),
    UniqueConstraint("task_id", name="uq_predictions_task_id"),
    CheckConstraint("status in ('ok', 'error')", name="status_known"),
    CheckConstraint(
        "(status = 'ok' AND label IS NOT NULL AND error IS NULL) OR (status = 'error' AND error IS NOT NULL)",
        name="status_consistent",
    ),
)
Index("ix_predictions_head_completed", predictions.c.head_name, predictions.c.completed_at.desc())
Index("ix_predictions_request_id", predictions.c.request_id)
