"""The revocation record: membership's revoked API keys, disabled organisers, revoked roles and ended sessions,
checked on every organiser session and API key (shared/revocations.py).

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations import create_revocations_table

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_revocations_table()


def downgrade() -> None:
    op.drop_table("revocations")
