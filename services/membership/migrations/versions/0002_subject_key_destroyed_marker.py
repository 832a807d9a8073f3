"""A destroyed subject key leaves a marker row (key NULL, destroyed_at set).

Revision ID: 0002
Revises: 0001
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("subject_keys", "key", existing_type=sa.LargeBinary(), nullable=True)
    op.add_column("subject_keys", sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM subject_keys WHERE key IS NULL")
    op.drop_column("subject_keys", "destroyed_at")
    op.alter_column("subject_keys", "key", existing_type=sa.LargeBinary(), nullable=False)
