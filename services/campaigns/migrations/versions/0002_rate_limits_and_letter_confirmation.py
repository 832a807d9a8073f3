"""Rate limits of the public forms (actions, letters), and letters that wait for their writer's confirmation.

Revision ID: 0002
Revises: 0001
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.campaigns.domain import RATE_LIMITS
from shared import ratelimit

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ratelimit.create_tables(op, RATE_LIMITS)
    op.add_column("actions", sa.Column("letter_confirmed_at", sa.DateTime(timezone=True), nullable=True))
    # Letters written before confirmations existed were sent at once.
    op.execute("UPDATE actions SET letter_confirmed_at = created_at WHERE kind = 'write_to_mp'")


def downgrade() -> None:
    op.drop_column("actions", "letter_confirmed_at")
    ratelimit.drop_tables(op)
