"""The organisers' list of meetings from an index on when each ends: a page of meetings still to come or over costs
what it shows, not the network's history of meetings (bench/pages.py, issue 20). The start and id are in the index
so the meetings still to come are sorted by start from the index alone.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_meetings_ends_at", "meetings", ["ends_at", "starts_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_meetings_ends_at", table_name="meetings")
