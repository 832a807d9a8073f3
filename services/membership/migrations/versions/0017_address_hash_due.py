"""Members whose address's keyed hash is still to be published (decision 0008): everyone not erased at the time
of this migration, published once by address_hashes.py (at start-up, or `republish-address-hashes`).

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "members", sa.Column("address_hash_due", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )
    op.execute("UPDATE members SET address_hash_due = true WHERE status <> 'erased'")
    op.create_index(
        "ix_members_address_hash_due", "members", ["id"], unique=False, postgresql_where=sa.text("address_hash_due")
    )


def downgrade() -> None:
    op.drop_index("ix_members_address_hash_due", table_name="members")
    op.drop_column("members", "address_hash_due")
