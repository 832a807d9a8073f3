"""Members are recognised by their address's keyed hash and named in organisers' lists: the members mirror keeps the
hash and the name and address sealed with the member's key; copies of members' keys; actions found by person.

Revision ID: 0004
Revises: 0003
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("members", sa.Column("email_hash", sa.String(length=64), nullable=True))
    op.add_column("members", sa.Column("name", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("members", sa.Column("email", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_index("ix_members_email_hash", "members", ["email_hash"])
    op.create_index("ix_actions_person_ref", "actions", ["person_ref"])
    op.create_table(
        "member_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_member_keys")),
    )


def downgrade() -> None:
    op.drop_table("member_keys")
    op.drop_index("ix_actions_person_ref", table_name="actions")
    op.drop_index("ix_members_email_hash", table_name="members")
    op.drop_column("members", "email")
    op.drop_column("members", "name")
    op.drop_column("members", "email_hash")
