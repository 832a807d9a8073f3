"""The members changed since a time, from an index: an OSDI client's incremental sync (`GET /api/v2/people?filter=
modified_date gt '…'`) counts them exactly for its total_records, which read every member (a parallel scan of
about 0.12-0.23 s at a million; 0.015 s from this index: bench/pages.py on bench/network.py --own-records-only's network, issue 20).

Revision ID: 0021
Revises: 0020
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Partial, as every reader of members leaves the erased out: the count is then read from the index alone.
    op.create_index("ix_members_updated_at", "members", ["updated_at"], postgresql_where=sa.text("status <> 'erased'"))


def downgrade() -> None:
    op.drop_index("ix_members_updated_at", table_name="members")
