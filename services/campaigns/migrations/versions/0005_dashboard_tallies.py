"""The dashboard's figures kept as tallies by the reporting projection (issue 20), counted once here for the members
and actions the read model already holds; an index for "joined in the last 30 days", one for a member's actions.

Revision ID: 0005
Revises: 0004
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.campaigns.tallies import ACTION_CONTRIBUTIONS, CONTRIBUTIONS

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rpt_tallies",
        sa.Column("scope_type", sa.String(length=20), nullable=False),
        sa.Column("scope_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("week", sa.Date(), nullable=False),
        sa.Column("joins", sa.BigInteger(), nullable=False),
        sa.Column("leaves", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope_type", "scope_id", "kind", "key", "week", name=op.f("pk_rpt_tallies")),
    )
    op.create_index("ix_rpt_members_joined_at", "rpt_members", ["joined_at"])
    op.create_index("ix_rpt_actions_member_id", "rpt_actions", ["member_id"])
    # Counted once for what the read model holds; the projection of this version keeps them from here on (events a
    # previous version projects after this, during a rolling upgrade, are not counted: `rebuild-reporting` then).
    op.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.rpt_tallies'))"))
    for statement in (CONTRIBUTIONS, ACTION_CONTRIBUTIONS):
        op.get_bind().execute(sa.text(statement), {"ids": None, "sign": 1})


def downgrade() -> None:
    op.drop_index("ix_rpt_actions_member_id", table_name="rpt_actions")
    op.drop_index("ix_rpt_members_joined_at", table_name="rpt_members")
    op.drop_table("rpt_tallies")
