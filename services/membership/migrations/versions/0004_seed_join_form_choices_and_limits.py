"""Seed the join form's choices (interests, levels of engagement, consent wording) and the spam limits.

Revision ID: 0004
Revises: 0003
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.membership import seeds

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _table(name: str, *columns: str) -> sa.TableClause:
    return sa.table(name, *(sa.column(c) for c in columns))


def upgrade() -> None:
    op.bulk_insert(
        _table("interests", "key", "label", "position"),
        [{"key": k, "label": label, "position": i} for i, (k, label) in enumerate(seeds.INTERESTS)],
    )
    op.bulk_insert(
        _table("engagement_levels", "key", "label", "position"),
        [{"key": k, "label": label, "position": i} for i, (k, label) in enumerate(seeds.ENGAGEMENT_LEVELS)],
    )
    op.bulk_insert(
        _table("consent_wordings", "version", "channel", "wording"),
        [{"version": v, "channel": "email", "wording": w} for v, w in seeds.CONSENT_WORDINGS],
    )
    op.bulk_insert(
        _table("rate_limits", "name", "max_count", "window_s"),
        [{"name": n, "max_count": c, "window_s": w} for n, c, w in seeds.RATE_LIMITS],
    )
    op.bulk_insert(
        _table("trusted_networks", "cidr", "note"), [{"cidr": c, "note": n} for c, n in seeds.TRUSTED_NETWORKS]
    )


def downgrade() -> None:
    for table in ("trusted_networks", "rate_limits", "consent_wordings", "engagement_levels", "interests"):
        op.execute(f"DELETE FROM {table}")
