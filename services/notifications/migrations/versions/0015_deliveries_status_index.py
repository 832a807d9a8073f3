"""The delivery log's last-seven-days summary counted from an index of each delivery's status and time: it read
every delivery of the week from the table, one page each (163 ms warm, 490 ms cold for 9,903 deliveries at 400,000,
bench/pages.py, issue 20).

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_deliveries_status_created_at", "deliveries", ["status", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_deliveries_status_created_at", table_name="deliveries")
