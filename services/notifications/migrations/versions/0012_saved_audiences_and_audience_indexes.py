"""Saved audiences ("saved lists") of mailings, and the live audience count in SQL: the address as the
suppression list keys it beside each recipient (filled in by the service: the key is a keyed hash), and indexes
over the members a mailing can reach.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REACHABLE = "email IS NOT NULL AND email_consent AND status = 'confirmed'"


def upgrade() -> None:
    op.add_column("recipients", sa.Column("address_key", sa.String(64), nullable=True))
    op.create_index("ix_recipients_address_key", "recipients", ["address_key"])
    where = sa.text(REACHABLE)
    op.create_index("ix_recipients_reachable_region", "recipients", ["region_id", "engagement_level"],
                    postgresql_where=where)
    for name, column in (("groups", "group_ids"), ("subteams", "subteam_ids"), ("interests", "interests")):
        op.create_index(f"ix_recipients_reachable_{name}", "recipients", [column], postgresql_using="gin",
                        postgresql_where=where)
    op.create_table(
        "saved_audiences",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("organiser_id", sa.String(36), nullable=False),
        sa.Column("scope_type", sa.String(20), nullable=False),
        sa.Column("scope_id", sa.String(36), nullable=True),
        sa.Column("audience", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_saved_audiences_scope", "saved_audiences", ["scope_type", "scope_id"])


def downgrade() -> None:
    op.drop_index("ix_saved_audiences_scope", table_name="saved_audiences")
    op.drop_table("saved_audiences")
    for name in ("interests", "subteams", "groups", "region"):
        op.drop_index(f"ix_recipients_reachable_{name}", table_name="recipients")
    op.drop_index("ix_recipients_address_key", table_name="recipients")
    op.drop_column("recipients", "address_key")
