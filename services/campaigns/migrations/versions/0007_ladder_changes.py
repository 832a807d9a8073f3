"""Saving the engagement ladder records it at once and moves the members in the background (issue 20): one row a
save, the job the campaigns service's background loop works through in chunks (its cursor and progress), at most one
moving at a time (docs/decisions/0014-ladder-moves-in-the-background.md).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ladder_changes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("ladder", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("expected", sa.Integer(), nullable=False),
        sa.Column("moved", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("published", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("chunks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("cursor", sa.String(length=36), nullable=True),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ladder_changes")),
    )
    op.create_index("ix_ladder_changes_saved_at", "ladder_changes", ["saved_at"])
    op.create_index("ux_ladder_changes_one_moving", "ladder_changes", [sa.text("(true)")], unique=True,
                    postgresql_where=sa.text("status = 'moving'"))


def downgrade() -> None:
    op.drop_table("ladder_changes")
