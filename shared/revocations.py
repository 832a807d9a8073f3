"""Each service's own record of what membership revoked, checked on every organiser session and API key.

Sessions and keys are signed tokens any service verifies locally; a signature cannot be taken back. So membership
announces every revocation on `membership.organisation` (ApiKeyRevoked, OrganiserDisabled, RoleRevoked,
OrganiserSignedOut) and every service copies them into its `revocations` table: membership in the same transaction
as the change, the others through a consumer group of their own (`add_revocation_group`), apart from their busier
groups so a revocation is not queued behind a fan-out. `shared/auth.py` asks `Revocations.is_revoked` before it
accepts a token; when the table cannot be read the token is refused (fails closed).

A row is one of:
- `session`: one session (sign-out), kept until that session would have expired anyway;
- `key`: one API key;
- `organiser`: every session and key of that organiser signed before `revoked_at` (disabled);
- `role`: that organiser's sessions of that scope, and the keys they made, signed before `revoked_at`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, delete, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared import topics
from shared.auth import OrganiserScope
from shared.db import Database
from shared.events.catalog import (
    EVENT_MODELS,
    ApiKeyRevoked,
    OrganiserDisabled,
    OrganiserSignedOut,
    RoleRevoked,
)
from shared.events.envelope import Envelope, EventData
from shared.handlers import Handlers, Registry
from shared.uow import UnitOfWork

REVOCATION_EVENTS: tuple[type[EventData], ...] = (ApiKeyRevoked, OrganiserDisabled, RoleRevoked, OrganiserSignedOut)


def revocations_table(metadata: MetaData) -> Table:
    """The `revocations` table, added to a service's own metadata (created by each service's migration through
    `shared.migrations.create_revocations_table`)."""
    return Table(
        "revocations",
        metadata,
        Column("id", String(120), primary_key=True),  # what was revoked, so a repeated event adds nothing
        Column("kind", String(20), nullable=False),  # session | key | organiser | role
        Column("organiser_id", String(64), nullable=True),
        Column("key_id", String(64), nullable=True),
        Column("session_id", String(64), nullable=True),
        Column("scope_type", String(20), nullable=True),
        Column("scope_id", String(64), nullable=True),
        Column("revoked_at", DateTime(timezone=True), nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=True),  # may be forgotten after this
        Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index("ix_revocations_organiser_id", "organiser_id"),
        Index("ix_revocations_key_id", "key_id"),
        Index("ix_revocations_session_id", "session_id"),
    )


def row_for(event: EventData) -> dict[str, Any]:
    """The row that records one revocation event."""
    if isinstance(event, ApiKeyRevoked):
        return {"id": f"key:{event.key_id}", "kind": "key", "key_id": event.key_id,
                "organiser_id": event.created_by, "revoked_at": event.revoked_at}
    if isinstance(event, OrganiserSignedOut):
        return {"id": f"session:{event.session_id}", "kind": "session", "session_id": event.session_id,
                "organiser_id": event.organiser_id, "revoked_at": event.signed_out_at, "expires_at": event.expires_at}
    if isinstance(event, OrganiserDisabled):
        return {"id": f"organiser:{event.organiser_id}:{event.disabled_at.isoformat()}", "kind": "organiser",
                "organiser_id": event.organiser_id, "revoked_at": event.disabled_at}
    if isinstance(event, RoleRevoked):
        return {"id": f"role:{event.grant_id}", "kind": "role", "organiser_id": event.organiser_id,
                "scope_type": event.scope_type, "scope_id": event.scope_id, "revoked_at": event.revoked_at}
    raise TypeError(f"{type(event).__name__} is not a revocation")


async def record(session: AsyncSession, table: Table, event: EventData) -> None:
    """Copy one revocation into `table` (idempotent: a redelivered event adds nothing)."""
    await session.execute(pg_insert(table).values(**row_for(event)).on_conflict_do_nothing(index_elements=["id"]))


class Revocations:
    """One service's revocation record: `is_revoked` for `shared/auth.py`, `prune` for ended sessions.

    The check runs on every organiser request, so it is one fixed statement sent straight to the pool's asyncpg
    connection: no statement built and compiled per request, no BEGIN and ROLLBACK around it, and asyncpg keeps it
    prepared on each connection. A service may refuse more in the same statement (membership: a session of an
    account no longer active, `services/membership/revoking.py`), by extending `session_sql`.
    """

    def __init__(self, db: Database, table: Table) -> None:
        self.db = db
        self.table = table
        name = table.fullname
        # $1 the organiser, $2 when the token was signed less a second (tokens carry whole seconds); then $3 the
        # session's id, $4 and $5 its scope, or $3 the key's id. A revocation of the organiser or of their role
        # applies to what was signed before it.
        by_organiser = "(kind = 'organiser' AND organiser_id = $1 AND revoked_at >= $2)"
        self.session_sql = (
            f"SELECT EXISTS (SELECT 1 FROM {name} WHERE (kind = 'session' AND session_id = $3) OR {by_organiser} "
            "OR (kind = 'role' AND organiser_id = $1 AND scope_type = $4 AND scope_id IS NOT DISTINCT FROM $5 "
            "AND revoked_at >= $2))"
        )
        self.key_sql = (
            f"SELECT EXISTS (SELECT 1 FROM {name} WHERE (kind = 'key' AND key_id = $3) OR {by_organiser} "
            "OR (kind = 'role' AND organiser_id = $1 AND revoked_at >= $2))"
        )

    def statement(self, who: OrganiserScope) -> tuple[str, tuple[Any, ...]]:
        """The check for `who` as SQL (a boolean) and its arguments."""
        signed_at = who.issued_at or datetime.now(UTC)  # unknown: as if signed now, so every revocation applies
        since = signed_at - timedelta(seconds=1)
        if who.key_id is not None:  # an API key: itself, or the organiser who made it disabled or their role taken
            return self.key_sql, (who.organiser_id, since, who.key_id)
        return self.session_sql, (who.organiser_id, since, who.session_id or "", who.scope_type, who.scope_id)

    async def is_revoked(self, who: OrganiserScope) -> bool:
        """Whether `who`'s session or key was revoked. Raises when the record cannot be read: the caller refuses."""
        sql, args = self.statement(who)
        async with self.db.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            if driver is None:
                raise LookupError("no connection to read the revocation record on")
            return bool(await driver.fetchval(sql, *args))

    async def prune(self) -> None:
        """Forget sessions that would have expired anyway."""
        async with self.db.transaction() as session:
            await session.execute(delete(self.table).where(self.table.c.expires_at < datetime.now(UTC)))


def add_revocation_group(registry: Registry, table: Table, group: str) -> Handlers:
    """A consumer group that copies membership's revocations into `table`, and nothing else."""
    handlers = registry.group(
        group,
        (topics.MEMBERSHIP_ORGANISATION,),
        "Revoked API keys, disabled organisers, revoked roles and ended sessions, copied into the revocation "
        "record every organiser session and API key is checked against",
    )

    async def revoked(uow: UnitOfWork, envelope: Envelope, event: EventData) -> None:
        await record(uow.session, table, event)

    handlers.route(*((model, revoked) for model in REVOCATION_EVENTS))
    others = [m for m in EVENT_MODELS if m.topic == topics.MEMBERSHIP_ORGANISATION and m not in REVOCATION_EVENTS]
    handlers.ignore(others, "not a revocation: the service's other groups read it")
    return handlers
