"""multi-text tasks and multi-label heads: predictions.item, predictions.labels, task fingerprints, task_conflicts

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing rows are single-text tasks: item 0
    op.add_column("predictions", sa.Column("item", sa.Integer, server_default=sa.text("0")))
    op.alter_column("predictions", "item", server_default=None)
    op.add_column("predictions", sa.Column("labels", JSONB))
    op.add_column("predictions", sa.Column("fingerprint", sa.LargeBinary))
    op.drop_constraint("uq_predictions_task_id_head_name", "predictions", type_="unique")
    op.create_unique_constraint(
        "uq_predictions_task_id_item_head_name", "predictions", ["task_id", "item", "head_name"],
        postgresql_nulls_not_distinct=True,
    )
    op.create_check_constraint("ck_predictions_item_not_negative", "predictions", "item >= 0")
    op.create_table(
        "task_conflicts",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("task_id", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.LargeBinary),
        sa.Column("existing_fingerprint", sa.LargeBinary),
        sa.Column("heads", JSONB),
        sa.Column("n_texts", sa.Integer),
        sa.Column("request_id", sa.Text),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("worker", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_task_conflicts"),
    )
    op.create_index("ix_task_conflicts_task_id", "task_conflicts", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_task_conflicts_task_id", table_name="task_conflicts")
    op.drop_table("task_conflicts")
    # back to one row per (task, head): keep each (task, head)'s first row
    op.execute(
        "DELETE FROM predictions p USING predictions q WHERE p.task_id = q.task_id "
        "AND p.head_name IS NOT DISTINCT FROM q.head_name AND p.id > q.id"
    )
    op.drop_constraint("ck_predictions_item_not_negative", "predictions", type_="check")
    op.drop_constraint("uq_predictions_task_id_item_head_name", "predictions", type_="unique")
    op.create_unique_constraint(
        "uq_predictions_task_id_head_name", "predictions", ["task_id", "head_name"],
        postgresql_nulls_not_distinct=True,
    )
    op.drop_column("predictions", "fingerprint")
    op.drop_column("predictions", "labels")
    op.drop_column("predictions", "item")
