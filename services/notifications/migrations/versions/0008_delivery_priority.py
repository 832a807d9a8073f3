"""Deliveries get a priority: people waiting for an email go before bulk sends.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BULK = "('announcement', 'follow_up', 'digest')"


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False))
    op.execute(f"UPDATE deliveries SET priority = 1 WHERE kind IN {BULK} AND status = 'pending'")
    op.drop_index("ix_deliveries_due", table_name="deliveries", postgresql_where=sa.text("status = 'pending'"))
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["priority", "next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_due", table_name="deliveries", postgresql_where=sa.text("status = 'pending'"))
    op.create_index(
        "ix_deliveries_due", "deliveries", ["next_attempt_at"], postgresql_where=sa.text("status = 'pending'")
    )
    op.drop_column("deliveries", "priority")
