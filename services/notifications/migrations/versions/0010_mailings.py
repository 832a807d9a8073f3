"""Mailings organisers write: the mailing, its links (clicks counted in aggregate), and members' interests in the
recipients mirror (a mailing's audience may be the people who chose an interest).

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("recipients", sa.Column("interests", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")))
    op.create_table(
        "mailings",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("organiser_id", sa.String(36), nullable=False),
        sa.Column("scope_type", sa.String(20), nullable=False),
        sa.Column("scope_id", sa.String(36), nullable=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("audience", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("status", sa.String(20), nullable=False, server_default="draft"),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cursor", sa.String(36), nullable=True),
        sa.Column("queued", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_mailings_due", "mailings", ["send_at"], postgresql_where=sa.text("status IN ('scheduled', 'sending')")
    )
    op.create_table(
        "mailing_links",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("mailing_id", sa.String(36), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("clicks", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.UniqueConstraint("mailing_id", "url", name="uq_mailing_links_url"),
    )


def downgrade() -> None:
    op.drop_table("mailing_links")
    op.drop_index("ix_mailings_due", table_name="mailings")
    op.drop_table("mailings")
    op.drop_column("recipients", "interests")
