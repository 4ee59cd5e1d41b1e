"""heads, head_events and predictions

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "heads",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("embedder_id", sa.Text, nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("labels", JSONB, nullable=False),
        sa.Column("config", JSONB, nullable=False),
        sa.Column("train_params", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("metrics", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("weights", sa.LargeBinary, nullable=False),
        sa.Column("data_fingerprint", sa.Text),
        sa.Column("n_train", sa.Integer),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("created_by", sa.Text),
        sa.Column("activated_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_heads"),
        sa.UniqueConstraint("name", "version", name="uq_heads_name_version"),
        sa.CheckConstraint("version >= 1", name="ck_heads_version_positive"),
    )
    op.create_index(
        "uq_heads_active_name", "heads", ["name"], unique=True, postgresql_where=sa.text("is_active")
    )
    op.create_table(
        "head_events",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("by", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_head_events"),
        sa.CheckConstraint("action in ('activate', 'rollback')", name="ck_head_events_action_known"),
    )
    op.create_table(
        "predictions",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("task_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text),
        sa.Column("head_name", sa.Text),
        sa.Column("head_version", sa.Integer),
        sa.Column("embedder_id", sa.Text),
        sa.Column("label", sa.Text),
        sa.Column("score", sa.Float),
        sa.Column("top3", JSONB),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("enqueued_at", sa.DateTime(timezone=True)),
        sa.Column("received_at", sa.DateTime(timezone=True)),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("worker", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_predictions"),
        sa.UniqueConstraint("task_id", name="uq_predictions_task_id"),
        sa.CheckConstraint("status in ('ok', 'error')", name="ck_predictions_status_known"),
        sa.CheckConstraint(
            "(status = 'ok' AND label IS NOT NULL AND error IS NULL) OR (status = 'error' AND error IS NOT NULL)",
            name="ck_predictions_status_consistent",
        ),
    )
    op.create_index(
        "ix_predictions_head_completed", "predictions", ["head_name", sa.text("completed_at DESC")]
    )
    op.create_index("ix_predictions_request_id", "predictions", ["request_id"])


def downgrade() -> None:
    op.drop_table("predictions")
    op.drop_table("head_events")
    op.drop_index("uq_heads_active_name", table_name="heads")
    op.drop_table("heads")
