"""The short join form's thank-you page: what each join made (join_followups), and who a public meeting is for.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "join_followups",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=36), nullable=True),
        sa.Column("request_id", sa.String(length=36), nullable=True),
        sa.Column("new_member", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("region_id", sa.String(length=36), nullable=True),
        sa.Column("group_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_join_followups_member_id_members"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_join_followups")),
    )
    op.create_index(op.f("ix_join_followups_member_id"), "join_followups", ["member_id"], unique=False)
    op.create_index(op.f("ix_join_followups_expires_at"), "join_followups", ["expires_at"], unique=False)
    op.add_column("public_meetings", sa.Column("scope_type", sa.String(length=20), nullable=True))
    op.add_column("public_meetings", sa.Column("scope_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    op.drop_column("public_meetings", "scope_id")
    op.drop_column("public_meetings", "scope_type")
    op.drop_index(op.f("ix_join_followups_expires_at"), table_name="join_followups")
    op.drop_index(op.f("ix_join_followups_member_id"), table_name="join_followups")
    op.drop_table("join_followups")
