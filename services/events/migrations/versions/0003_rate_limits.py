"""Rate limits of the public forms (RSVP, self check-in): the limits, the networks never limited, the counters.

Revision ID: 0003
Revises: 0002
"""
from collections.abc import Sequence

from alembic import op

from services.events.domain import RATE_LIMITS
from shared import ratelimit

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ratelimit.create_tables(op, RATE_LIMITS)


def downgrade() -> None:
    ratelimit.drop_tables(op)
