"""head lifecycle: abstention, one prediction row per (task, head), datasets, examples, feedback, embedding cache

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATUS_CONSISTENT_V1 = (
    "(status = 'ok' AND label IS NOT NULL AND error IS NULL) OR (status = 'error' AND error IS NOT NULL)"
)
STATUS_CONSISTENT_V2 = (
    "(status = 'ok' AND error IS NULL AND (label IS NOT NULL OR abstained)) "
    "OR (status = 'error' AND error IS NOT NULL AND NOT abstained)"
)


# Check constraint names go through the naming convention of embedclf.store.tables (ck_<table>_<name>);
# 0001 passed full names, so its predictions checks are called ck_predictions_ck_predictions_*.


def upgrade() -> None:
    op.add_column("predictions", sa.Column("abstained", sa.Boolean, nullable=False, server_default=sa.text("false")))
    op.drop_constraint("ck_predictions_status_consistent", "predictions", type_="check")
    op.create_check_constraint("ck_predictions_status_consistent", "predictions", STATUS_CONSISTENT_V2)
    op.drop_constraint("uq_predictions_task_id", "predictions", type_="unique")
    op.create_unique_constraint(
        "uq_predictions_task_id_head_name", "predictions", ["task_id", "head_name"],
        postgresql_nulls_not_distinct=True,
    )

    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("created_by", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.UniqueConstraint("name", name="uq_datasets_name"),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 128", name="name_length"),
    )
    op.create_table(
        "examples",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("text_sha256", sa.LargeBinary, nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default=sa.text("'import'")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("created_by", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_examples"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_examples_dataset_id_datasets",
                                ondelete="CASCADE"),
        sa.UniqueConstraint("dataset_id", "text_sha256", "label", name="uq_examples_dataset_text_label"),
        sa.CheckConstraint("source in ('import', 'feedback')", name="source_known"),
        sa.CheckConstraint("text <> '' AND label <> ''", name="not_empty"),
        sa.CheckConstraint("octet_length(text_sha256) = 32", name="sha256_length"),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("task_id", sa.Text, nullable=False),
        sa.Column("head_name", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("source", sa.Text, nullable=False, server_default=sa.text("'app'")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("current_user")),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.CheckConstraint("label <> '' AND task_id <> '' AND head_name <> ''", name="not_empty"),
    )
    op.create_index("ix_feedback_head_task", "feedback", ["head_name", "task_id"])
    op.create_table(
        "embedding_cache",
        sa.Column("embedder_id", sa.Text, nullable=False),
        sa.Column("text_sha256", sa.LargeBinary, nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("embedder_id", "text_sha256", name="pk_embedding_cache"),
        sa.CheckConstraint("octet_length(vector) = 4 * dim", name="vector_size"),
    )


def downgrade() -> None:
    op.drop_table("embedding_cache")
    op.drop_index("ix_feedback_head_task", table_name="feedback")
    op.drop_table("feedback")
    op.drop_table("examples")
    op.drop_table("datasets")
    # back to one row per task: keep the first row of each task (several heads per task cannot be kept),
    # and abstained rows cannot satisfy the old check: they become error rows that say so
    op.execute(
        "DELETE FROM predictions p USING predictions q WHERE p.task_id = q.task_id AND p.id > q.id"
    )
    op.drop_constraint("ck_predictions_status_consistent", "predictions", type_="check")
    op.execute(
        "UPDATE predictions SET status = 'error', error = 'abstained (downgraded from schema 0002)' "
        "WHERE abstained AND label IS NULL"
    )
    op.drop_constraint("uq_predictions_task_id_head_name", "predictions", type_="unique")
    op.create_unique_constraint("uq_predictions_task_id", "predictions", ["task_id"])
    op.create_check_constraint("ck_predictions_status_consistent", "predictions", STATUS_CONSISTENT_V1)
    op.drop_column("predictions", "abstained")
