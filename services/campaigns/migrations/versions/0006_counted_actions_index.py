"""The organisers' campaigns list counts each campaign's actions (letters once confirmed) from an index of the
counted ones alone, without reading the actions: 606 ms for a page of campaigns at 200,000 actions (bench/pages.py,
issue 20).

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_actions_counted_campaign", "actions", ["campaign_id"], unique=False,
                    postgresql_where=sa.text("kind <> 'write_to_mp' OR letter_confirmed_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_actions_counted_campaign", table_name="actions")
