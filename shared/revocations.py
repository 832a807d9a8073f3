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

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, and_, delete, func, or_, select
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
    """One service's revocation record: `is_revoked` for `shared/auth.py`, `prune` for ended sessions."""

    def __init__(self, db: Database, table: Table) -> None:
        self.db = db
        self.table = table

    def _matches(self, who: OrganiserScope) -> Any:
        r = self.table
        signed_at = who.issued_at or datetime.now(UTC)  # unknown: as if signed now, so every revocation applies
        earlier = r.c.revoked_at >= signed_at - timedelta(seconds=1)  # tokens carry whole seconds
        by_organiser = and_(r.c.kind == "organiser", r.c.organiser_id == who.organiser_id, earlier)
        if who.key_id is not None:  # an API key: itself, or the organiser who made it disabled or their role taken
            return or_(
                and_(r.c.kind == "key", r.c.key_id == who.key_id),
                by_organiser,
                and_(r.c.kind == "role", r.c.organiser_id == who.organiser_id, earlier),
            )
        same_scope = and_(r.c.scope_type == who.scope_type, r.c.scope_id.is_not_distinct_from(who.scope_id))
        return or_(
            and_(r.c.kind == "session", r.c.session_id == (who.session_id or "")),
            by_organiser,
            and_(r.c.kind == "role", r.c.organiser_id == who.organiser_id, same_scope, earlier),
        )

    async def is_revoked(self, who: OrganiserScope) -> bool:
        """Whether `who`'s session or key was revoked. Raises when the record cannot be read: the caller refuses."""
        async with self.db.engine.connect() as conn:
            found = await conn.execute(select(self.table.c.id).where(self._matches(who)).limit(1))
            return found.first() is not None

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
