"""Alembic, driven from code: each service keeps its revisions in `services/<name>/migrations/`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection

from shared.db import connect_engine

# The advisory lock every `migrate` holds while it migrates (any number, the same for every service: each has its
# own database).
MIGRATION_LOCK_ID = 0x6753_4D49_4752  # "gsMIGR"


def alembic_config(service_dir: Path, database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(service_dir / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(service_dir: Path, database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service_dir, database_url), revision)


def run_env(metadata: MetaData) -> None:
    """The body of every service's `migrations/env.py`."""
    config = context.config
    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def do_run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            # Instances starting together (the Helm chart's init containers) migrate one after the other: the
            # others wait here, then find the database at head and do nothing.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            context.run_migrations()

    async def run_async() -> None:
        engine = connect_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
        await engine.dispose()

    asyncio.run(run_async())


def create_outbox_notify() -> None:
    """Call at the end of a service's initial revision: the outbox's NOTIFY trigger and its shard rows."""
    from alembic import op

    from shared.outbox import NOTIFY_TRIGGER_SQL

    for statement in NOTIFY_TRIGGER_SQL:
        op.execute(statement)


def drop_outbox_notify() -> None:
    from alembic import op

    from shared.outbox import DROP_TRIGGER_SQL

    for statement in DROP_TRIGGER_SQL:
        op.execute(statement)


def create_revocations_table() -> None:
    """Every service's copy of membership's revocations (`shared/revocations.py`), in its own revision."""
    import sqlalchemy as sa
    from alembic import op

    op.create_table(
        "revocations",
        sa.Column("id", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("organiser_id", sa.String(length=64), nullable=True),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("scope_type", sa.String(length=20), nullable=True),
        sa.Column("scope_id", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revocations")),
    )
    op.create_index("ix_revocations_organiser_id", "revocations", ["organiser_id"])
    op.create_index("ix_revocations_key_id", "revocations", ["key_id"])
    op.create_index("ix_revocations_session_id", "revocations", ["session_id"])
