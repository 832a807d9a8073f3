"""The revocation record: membership's revoked API keys, disabled organisers, revoked roles and ended sessions,
checked on every organiser session and API key (shared/revocations.py); and each organiser account's wrong
sign-ins in a row, for its exponential back-off.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.migrations import create_revocations_table

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_revocations_table()
    op.create_table(
        "signin_backoff",
        sa.Column("bucket", sa.String(length=80), nullable=False),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_signin_backoff")),
    )


def downgrade() -> None:
    op.drop_table("signin_backoff")
    op.drop_table("revocations")
