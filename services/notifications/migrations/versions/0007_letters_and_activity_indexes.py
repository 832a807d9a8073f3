"""Reply-To on deliveries (letters to MPs); indexes digests need on the activity log at network scale.

Revision ID: 0007
Revises: 0006
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("reply_to", sa.String(length=254), nullable=True))
    op.create_index("ix_activity_kind_occurred_at", "activity", ["kind", "occurred_at"])
    op.create_index("ix_activity_subject_id", "activity", ["subject_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_activity_subject_id", table_name="activity")
    op.drop_index("ix_activity_kind_occurred_at", table_name="activity")
    op.drop_column("deliveries", "reply_to")
