"""Who organises where, for their digests: organisers mirrored from RoleGranted (their address unsealed once
their key is here) with a digest subscription per scope, their choice of daily or weekly and their private
feed's address; and the network's regions and groups by name, mirrored from OrganisationUnitDefined (the
consumer group `notifications.organisers`).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications.digest_schedule import PERIODS, next_digest_time
from services.notifications.service import NotificationService
from shared.events.catalog import (
    MemberErased,
    MemberProfileUpdated,
    OrganisationUnitDefined,
    OrganiserDisabled,
    RoleGranted,
    RoleRevoked,
)
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork


def new_feed_token() -> str:
    return secrets.token_urlsafe(24)


def _now() -> datetime:
    return datetime.now(UTC)


class Organisers:
    """Use cases of the organisers mirror and their digest subscriptions."""

    def __init__(self, notifications: NotificationService) -> None:
        self.notifications = notifications
        self.uows = notifications.uows

    # reacting to events ----------------------------------------------------------------------------
    async def role_granted(self, uow: UnitOfWork, envelope: Envelope, event: RoleGranted) -> None:
        """Mirror the organiser (address unsealed once their key is here) and subscribe them to their scope."""
        session = uow.session
        email = name = None
        if event.email is not None:
            if not await self.notifications.key_ready(uow, envelope, event.email.key_id):
                return  # parked until the key arrives (or dropped: the person was erased)
            email = await self.notifications.keys.unseal(session, event.email)
            name = await self.notifications.keys.unseal(session, event.name)
        o = tables.organisers
        changes: dict[str, Any] = {"updated_at": _now()}
        if email is not None:
            changes["email"] = email
        if name is not None:
            changes["name"] = name
        if event.member_id is not None:
            changes["member_id"] = event.member_id
        await session.execute(
            pg_insert(o)
            .values(
                organiser_id=event.organiser_id,
                member_id=event.member_id,
                email=email,
                name=name,
                feed_token=new_feed_token(),
            )
            .on_conflict_do_update(index_elements=[o.c.organiser_id], set_=changes)
        )
        period = (
            await session.execute(select(o.c.digest_period).where(o.c.organiser_id == event.organiser_id))
        ).scalar_one()
        s = tables.digest_subscriptions
        await session.execute(
            pg_insert(s)
            .values(
                organiser_id=event.organiser_id,
                role=event.role,
                scope_type=event.scope_type,
                scope_id=event.scope_id or "",
                next_digest_at=next_digest_time(period, _now()),
            )
            .on_conflict_do_nothing(constraint="uq_digest_subscriptions_scope")
        )

    async def role_revoked(self, uow: UnitOfWork, envelope: Envelope, event: RoleRevoked) -> None:
        """That scope's digests stop; with no scope left, so does the feed (its address is replaced: the old one
        answers 404)."""
        s = tables.digest_subscriptions
        await uow.session.execute(
            delete(s).where(
                s.c.organiser_id == event.organiser_id,
                s.c.scope_type == event.scope_type,
                s.c.scope_id == (event.scope_id or ""),
            )
        )
        left = await uow.session.execute(select(s.c.id).where(s.c.organiser_id == event.organiser_id).limit(1))
        if left.first() is None:
            await self.renew_feed_token(uow, event.organiser_id)

    async def organiser_disabled(self, uow: UnitOfWork, envelope: Envelope, event: OrganiserDisabled) -> None:
        """A disabled organiser gets no more digests, and their feed's address stops working."""
        s = tables.digest_subscriptions
        await uow.session.execute(delete(s).where(s.c.organiser_id == event.organiser_id))
        await self.renew_feed_token(uow, event.organiser_id)

    async def unit_defined(self, uow: UnitOfWork, envelope: Envelope, event: OrganisationUnitDefined) -> None:
        u = tables.units
        values = {"kind": event.kind, "name": event.name, "parent_id": event.parent_id, "updated_at": _now()}
        await uow.session.execute(
            pg_insert(u)
            .values(unit_id=event.unit_id, **values)
            .on_conflict_do_update(index_elements=[u.c.unit_id], set_=values)
        )

    async def member_profile_updated(self, uow: UnitOfWork, envelope: Envelope, event: MemberProfileUpdated) -> None:
        """An organiser who is a member changed their address: their digests follow it."""
        if event.email is None and event.name is None:
            return
        session = uow.session
        o = tables.organisers
        if (await session.execute(select(o.c.organiser_id).where(o.c.member_id == event.member_id))).first() is None:
            return
        try:
            email = await self.notifications.keys.unseal(session, event.email)
            name = await self.notifications.keys.unseal(session, event.name)
        except LookupError:
            return  # key gone (erased) or not here yet: RoleGranted's copy stays
        values: dict[str, Any] = {"updated_at": _now()}
        if email:
            values["email"] = email
        if name:
            values["name"] = name
        await session.execute(update(o).where(o.c.member_id == event.member_id).values(**values))

    async def member_erased(self, uow: UnitOfWork, envelope: Envelope, event: MemberErased) -> None:
        """An organiser who was the erased member is removed with their digests."""
        session = uow.session
        o = tables.organisers
        ids = (await session.execute(select(o.c.organiser_id).where(o.c.member_id == event.member_id))).scalars().all()
        if ids:
            await session.execute(delete(tables.digests).where(tables.digests.c.organiser_id.in_(ids)))
            await session.execute(
                delete(tables.digest_subscriptions).where(tables.digest_subscriptions.c.organiser_id.in_(ids))
            )
            await session.execute(delete(o).where(o.c.organiser_id.in_(ids)))

    # organisers' choices ---------------------------------------------------------------------------
    async def choose_period(self, uow: UnitOfWork, organiser_id: str, period: str) -> None:
        """Switch an organiser between daily and weekly digests; the next one follows the new rhythm."""
        if period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}")
        o, s = tables.organisers, tables.digest_subscriptions
        await uow.session.execute(
            update(o).where(o.c.organiser_id == organiser_id).values(digest_period=period, updated_at=_now())
        )
        await uow.session.execute(
            update(s).where(s.c.organiser_id == organiser_id).values(next_digest_at=next_digest_time(period, _now()))
        )

    async def renew_feed_token(self, uow: UnitOfWork, organiser_id: str) -> str:
        """Revoke the organiser's feed address by giving them a new one."""
        token = new_feed_token()
        o = tables.organisers
        await uow.session.execute(
            update(o).where(o.c.organiser_id == organiser_id).values(feed_token=token, feed_token_created_at=_now())
        )
        return token

    # reading ---------------------------------------------------------------------------------------
    async def organiser(self, session: AsyncSession, organiser_id: str) -> Any:
        o = tables.organisers
        return (await session.execute(select(o).where(o.c.organiser_id == organiser_id))).first()

    async def organiser_by_feed_token(self, session: AsyncSession, token: str) -> Any:
        o = tables.organisers
        return (await session.execute(select(o).where(o.c.feed_token == token))).first()

    async def subscriptions_of(self, session: AsyncSession, organiser_id: str) -> list[Any]:
        s = tables.digest_subscriptions
        rows = await session.execute(select(s).where(s.c.organiser_id == organiser_id).order_by(s.c.id))
        return list(rows.all())

    async def digests_of(self, session: AsyncSession, organiser_id: str, limit: int = 50) -> list[Any]:
        d = tables.digests
        rows = await session.execute(
            select(d).where(d.c.organiser_id == organiser_id).order_by(d.c.created_at.desc(), d.c.id).limit(limit)
        )
        return list(rows.all())
