"""The member list's order (newest first) from an index: at a million members the list's page no longer sorts every
member (bench/pages.py, issue 20).

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_members_joined_at_id", "members", [sa.text("joined_at DESC"), "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_members_joined_at_id", table_name="members")
