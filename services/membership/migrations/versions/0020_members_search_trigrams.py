"""A search by part of a name or address from trigram indexes (pg_trgm): the member list's search no longer reads
every member at a million (bench/pages.py, issue 20).

pg_trgm ships with PostgreSQL (Debian's packages, the official image) and is a trusted extension, so the database's
owner may create it. Where it cannot be created (a managed service that refuses it), the migration says so and
goes on without the indexes: the search then works as before, by reading the members.

Revision ID: 0020
Revises: 0019
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning("pg_trgm could not be created (%s); the member search goes on without its indexes",
                    str(exc.orig).splitlines()[0])
        return
    op.execute("CREATE INDEX IF NOT EXISTS ix_members_name_trgm ON members USING gin (lower(name) gin_trgm_ops)")
    op.execute("CREATE INDEX IF NOT EXISTS ix_members_email_trgm ON members USING gin (email_normalised gin_trgm_ops)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_members_email_trgm")
    op.execute("DROP INDEX IF EXISTS ix_members_name_trgm")
