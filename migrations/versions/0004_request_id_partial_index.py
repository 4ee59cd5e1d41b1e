"""predictions.request_id indexed only where it is set (bulk tasks often carry none)

A lookup by request id (``request_id = 'x'``) never matches a NULL, so the NULLs in the index only
cost every insert of a row without one an index entry. The partial index answers the same queries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_predictions_request_id", table_name="predictions")
    op.create_index("ix_predictions_request_id", "predictions", ["request_id"],
                    postgresql_where=sa.text("request_id IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_predictions_request_id", table_name="predictions")
    op.create_index("ix_predictions_request_id", "predictions", ["request_id"])
