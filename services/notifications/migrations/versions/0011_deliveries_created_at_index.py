"""The delivery log (newest first) and its last-week summary from an index: at 20 deliveries a member, the log no
longer sorts every delivery ever made (bench/pages.py, issue 20).

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_deliveries_created_at_id", "deliveries", [sa.text("created_at DESC"), "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_deliveries_created_at_id", table_name="deliveries")
