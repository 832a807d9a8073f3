"""The public front door: privacy notices (versioned, named by consent records), the network's description, and
read models of public meetings and live campaigns (fed by events' and campaigns' events).

Revision ID: 0011
Revises: 0010
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.membership import seeds

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "privacy_notices",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_by", sa.String(length=80), server_default="system", nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_privacy_notices")),
    )
    op.create_table(
        "network_profile",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_by", sa.String(length=80), server_default="system", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_network_profile")),
    )
    op.create_table(
        "public_meetings",
        sa.Column("meeting_id", sa.String(length=36), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("venue", sa.String(length=500), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timezone", sa.String(length=60), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("meeting_id", name=op.f("pk_public_meetings")),
    )
    op.create_index("ix_public_meetings_starts_at", "public_meetings", ["starts_at"], unique=False)
    op.create_table(
        "public_campaigns",
        sa.Column("campaign_id", sa.String(length=36), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("goal", sa.Text(), server_default="", nullable=False),
        sa.Column("launched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_public_campaigns")),
    )
    op.add_column("consent_records", sa.Column("privacy_version", sa.Integer(), nullable=True))
    op.bulk_insert(
        sa.table("privacy_notices", sa.column("version"), sa.column("body")),
        [{"version": 1, "body": seeds.PRIVACY_NOTICE}],
    )
    op.bulk_insert(
        sa.table("network_profile", sa.column("id"), sa.column("description")),
        [{"id": 1, "description": seeds.NETWORK_DESCRIPTION}],
    )


def downgrade() -> None:
    op.drop_column("consent_records", "privacy_version")
    op.drop_table("public_campaigns")
    op.drop_index("ix_public_meetings_starts_at", table_name="public_meetings")
    op.drop_table("public_meetings")
    op.drop_table("network_profile")
    op.drop_table("privacy_notices")
