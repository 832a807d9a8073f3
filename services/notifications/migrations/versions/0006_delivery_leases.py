"""Deliveries are claimed in batches with a lease: status 'sending' until `lease_until`.

Revision ID: 0006
Revises: 0005
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_deliveries_sending", "deliveries", ["lease_until"], postgresql_where=sa.text("status = 'sending'")
    )
    op.create_index(
        "ix_deliveries_due", "deliveries", ["next_attempt_at"], postgresql_where=sa.text("status = 'pending'")
    )
    op.create_index("ix_deliveries_recipient", "deliveries", ["recipient_id"])


def downgrade() -> None:
    op.execute("UPDATE deliveries SET status = 'pending' WHERE status = 'sending'")
    op.drop_index("ix_deliveries_recipient", table_name="deliveries")
    op.drop_index("ix_deliveries_due", table_name="deliveries", postgresql_where=sa.text("status = 'pending'"))
    op.drop_index("ix_deliveries_sending", table_name="deliveries", postgresql_where=sa.text("status = 'sending'"))
    op.drop_column("deliveries", "lease_until")
