"""members keep given and family names as sent, a phone number and custom fields (OSDI people)

Revision ID: 0010
Revises: 0009

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("members", sa.Column("given_name", sa.String(length=120), nullable=True))
    op.add_column("members", sa.Column("family_name", sa.String(length=120), nullable=True))
    op.add_column("members", sa.Column("phone_number", sa.String(length=40), nullable=True))
    op.add_column(
        "members",
        sa.Column(
            "custom_fields",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("members", "custom_fields")
    op.drop_column("members", "phone_number")
    op.drop_column("members", "family_name")
    op.drop_column("members", "given_name")
