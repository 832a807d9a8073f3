"""A member's data download gathered from every service: the request and each service's part (sealed).

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "member_data_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("member_id", sa.String(length=36), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("waiting_on", postgresql.ARRAY(sa.String(length=40)), server_default=sa.text("'{}'"), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_data_requests_member_id_members"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_data_requests")),
    )
    op.create_index(
        op.f("ix_member_data_requests_member_id"), "member_data_requests", ["member_id"], unique=False
    )
    op.create_table(
        "member_data_parts",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("service", sa.String(length=40), nullable=False),
        sa.Column("part", postgresql.JSONB(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["member_data_requests.id"],
            name=op.f("fk_member_data_parts_request_id_member_data_requests"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", "service", name=op.f("pk_member_data_parts")),
    )


def downgrade() -> None:
    op.drop_table("member_data_parts")
    op.drop_index(op.f("ix_member_data_requests_member_id"), table_name="member_data_requests")
    op.drop_table("member_data_requests")
