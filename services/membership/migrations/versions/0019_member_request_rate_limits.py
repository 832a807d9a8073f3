"""Rate limits on asking for a download or an erasure from a member's link (each asks emails a confirmation):
five an hour per member, thirty in ten minutes per connection.

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIMITS = (("member-request-per-member", 5, 3600), ("member-request-per-ip", 30, 600))


def upgrade() -> None:
    for name, max_count, window_s in LIMITS:
        op.execute(
            "INSERT INTO rate_limits (name, max_count, window_s) "
            f"VALUES ('{name}', {max_count}, {window_s}) ON CONFLICT (name) DO NOTHING"
        )


def downgrade() -> None:
    names = ", ".join(f"'{name}'" for name, _, _ in LIMITS)
    op.execute(f"DELETE FROM rate_limits WHERE name IN ({names})")
