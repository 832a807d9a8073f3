"""Recognising a member in what campaigns keeps: actions taken with their address, before or after they joined.

Membership publishes each member's address only as a keyed hash (MemberJoined's `email_hash`, shared/contact.py
`address_hash`); an action taken with an address is stored with `person_ref` `email:<that hash>`, so when the
member joins (or when campaigns learns of them after they acted) their earlier actions are found by it. Each action
that becomes theirs is announced as ActionLinkedToMember (reports, digests), and its engagement fact is theirs, so
the ladder counts it. An RSVP that events links to a member (RsvpLinkedToMember) brings its attendance and its
attend actions. Nothing here reads another service's database (docs/decisions/0008).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from services.campaigns import db as tables
from services.campaigns import queries
from services.campaigns.domain import place_of
from shared.contact import address_hash, address_ref_of
from shared.events import catalog as ev
from shared.uow import UnitOfWork

ACTION_SOURCE = "action:"  # membership marks a join that came from an action with source "action:<action id>"


class MemberLinks:
    def __init__(self, *, secret_key: str) -> None:
        self.secret_key = secret_key

    async def member_of_address(self, session: AsyncSession, email: str | None) -> str | None:
        """The member (still a member) whose address this is, when campaigns knows them."""
        if not email:
            return None
        return await queries.member_with_hash(session, address_hash(self.secret_key, email))

    async def member_joined(self, uow: UnitOfWork, event: ev.MemberJoined) -> list[str]:
        """Actions taken with the new member's address (or the one they joined from) are theirs now; their ids."""
        which: list[ColumnElement[bool]] = []
        x = tables.actions
        if event.email_hash:
            which.append(x.c.person_ref == address_ref_of(event.email_hash))
        if event.source.startswith(ACTION_SOURCE):
            which.append(x.c.id == event.source.removeprefix(ACTION_SOURCE))
        if not which:
            return []
        return await self._link(uow, or_(*which), event.member_id, place_of(event.region_id, event.group_ids))

    async def email_changed(self, uow: UnitOfWork, member_id: str, email_hash: str) -> list[str]:
        member = await queries.member(uow.session, member_id)
        place = place_of(member.region_id, member.group_ids) if member else (None, None)
        return await self._link(uow, tables.actions.c.person_ref == address_ref_of(email_hash), member_id, place)

    async def action_arrived(self, uow: UnitOfWork, event: ev.ActionTaken) -> None:
        """An action stored without a member while its member's MemberJoined was being handled is linked when its
        own ActionTaken arrives (its address is still on the row)."""
        if event.member_id is not None:
            return
        x = tables.actions
        row = (await uow.session.execute(select(x.c.member_id, x.c.email).where(x.c.id == event.action_id))).first()
        if row is None or row.member_id is not None or not row.email:
            return
        member_id = await self.member_of_address(uow.session, row.email)
        if member_id is not None:
            member = await queries.member(uow.session, member_id)
            place = place_of(member.region_id, member.group_ids) if member else (None, None)
            await self._link(uow, x.c.id == event.action_id, member_id, place)

    async def rsvp_linked(self, uow: UnitOfWork, event: ev.RsvpLinkedToMember) -> None:
        """Events found the RSVP's address is a member's: its attendance and its attend actions are theirs."""
        member = await queries.member(uow.session, event.member_id)
        place = place_of(member.region_id, member.group_ids) if member else (None, None)
        await self._link(uow, tables.actions.c.rsvp_id == event.rsvp_id, event.member_id, place)
        await queries.link_facts_of(uow.session, "attendance", [event.rsvp_id], event.member_id)

    async def _link(self, uow: UnitOfWork, which: ColumnElement[bool], member_id: str,
                    place: tuple[str | None, str | None]) -> list[str]:
        x = tables.actions
        region_id, group_id = place
        linked: Sequence[Row] = (await uow.session.execute(
            update(x).where(which, x.c.member_id.is_(None))
            .values(member_id=member_id, region_id=region_id, group_id=group_id)
            .returning(x.c.id, x.c.ask_id, x.c.campaign_id, x.c.kind, x.c.created_at)
        )).all()
        if not linked:
            return []
        ids = [r.id for r in linked]
        await queries.link_facts_of(uow.session, "action", ids, member_id)
        await uow.emit(*(
            ev.ActionLinkedToMember(action_id=r.id, ask_id=r.ask_id, campaign_id=r.campaign_id, kind=r.kind,
                                    member_id=member_id, region_id=region_id, group_id=group_id,
                                    taken_at=r.created_at)
            for r in linked
        ))
        return ids
