"""All tables, in one place. Alembic migrations in ``migrations/`` create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
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

PREDICTION_STATUS_CONSISTENT = (
    "(status = 'ok' AND error IS NULL AND (label IS NOT NULL OR abstained)) "
    "OR (status = 'error' AND error IS NOT NULL AND NOT abstained)"
)

#: one row per task and head: the result an analyst queries
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
    #: the head abstained (out of scope): status 'ok', no label, top3 kept
    Column("abstained", Boolean, nullable=False, server_default=text("false")),
    #: the text's 0-based position in its task (0 for a ``text`` task); NULL: the row answers for the whole task
    Column("item", Integer),
    #: multi-label heads: every label over its threshold, ``[{"label", "score"}, ...]`` best first
    Column("labels", JSONB),
    #: hash of the task's content (heads, texts, request ids): tells a redelivery from a reused task id
    Column("fingerprint", LargeBinary),
    # one row per (task, text, head); NULLS NOT DISTINCT: rows that stand for the whole task or every
    # head are deduplicated too. task_id leads the index, so lookups by task id use it.
    UniqueConstraint("task_id", "item", "head_name", name="uq_predictions_task_id_item_head_name",
                     postgresql_nulls_not_distinct=True),
    CheckConstraint("status in ('ok', 'error')", name="status_known"),
    CheckConstraint(PREDICTION_STATUS_CONSISTENT, name="status_consistent"),
    CheckConstraint("item >= 0", name="item_not_negative"),
)
Index("ix_predictions_head_completed", predictions.c.head_name, predictions.c.completed_at.desc())
# only rows that carry a request id: a lookup by id never matches NULL, and bulk rows often have none
Index("ix_predictions_request_id", predictions.c.request_id, postgresql_where=predictions.c.request_id.isnot(None))

#: a task id reused by a different task (other heads, texts or request ids): its rows were not written
task_conflicts = Table(
    "task_conflicts",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("task_id", Text, nullable=False),
    Column("fingerprint", LargeBinary),
    Column("existing_fingerprint", LargeBinary),
    Column("heads", JSONB),
    Column("n_texts", Integer),
    Column("request_id", Text),
    Column("detected_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("worker", Text),
)
Index("ix_task_conflicts_task_id", task_conflicts.c.task_id)

#: named collections of labelled examples (``embedclf data import``)
datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_by", Text),
    UniqueConstraint("name", name="uq_datasets_name"),
    CheckConstraint("length(name) BETWEEN 1 AND 128", name="name_length"),
)

#: labelled examples; an exact duplicate (same text and label) is stored once per dataset
examples = Table(
    "examples",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False),
    Column("text", Text, nullable=False),
    Column("label", Text, nullable=False),
    #: sha256 of the UTF-8 text: the dedupe key (a btree over long texts would overflow)
    Column("text_sha256", LargeBinary, nullable=False),
    Column("source", Text, nullable=False, server_default=text("'import'")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_by", Text),
    UniqueConstraint("dataset_id", "text_sha256", "label", name="uq_examples_dataset_text_label"),
    CheckConstraint("source in ('import', 'feedback')", name="source_known"),
    CheckConstraint("text <> '' AND label <> ''", name="not_empty"),
    CheckConstraint("octet_length(text_sha256) = 32", name="sha256_length"),
)

#: the correct label for a prediction, from operators (``embedclf feedback``) or other apps;
#: the latest row per (task_id, head_name) wins when a retrain includes feedback
feedback = Table(
    "feedback",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("task_id", Text, nullable=False),
    Column("head_name", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("note", Text),
    Column("source", Text, nullable=False, server_default=text("'app'")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_by", Text, nullable=False, server_default=text("current_user")),
    CheckConstraint("label <> '' AND task_id <> '' AND head_name <> ''", name="not_empty"),
)
Index("ix_feedback_head_task", feedback.c.head_name, feedback.c.task_id)

#: embeddings by (embedder id, sha256 of the exact UTF-8 text): float32 little-endian bytes
embedding_cache = Table(
    "embedding_cache",
    metadata,
    Column("embedder_id", Text, primary_key=True),
    Column("text_sha256", LargeBinary, primary_key=True),
    Column("dim", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("octet_length(vector) = 4 * dim", name="vector_size"),
)
