"""The campaigns service's use cases for actions: someone takes an action on an ask (a form, the OSDI API, or an
RSVP to a meeting an attend ask points at), organisers moderate pledges, and a member's erasure blanks theirs.

An action is counted once per person and ask by a unique (ask, person) row: a second signature finds the first
and publishes nothing. Whether an action is accepted, and what it announces, are rules of domain.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import db as tables
from services.campaigns import queries
from services.campaigns.domain import (
    KEY_OWNER,
    ActionForm,
    ActionNotFound,
    ActionRefused,
    Ask,
    AskNotFound,
    Constituency,
    accept_action,
    attend_action_id,
    closed_reason,
    place_of,
    publishes_pledge,
    repeat_events,
    stored_action,
)
from services.campaigns.linking import MemberLinks
from services.campaigns.service import check_scope
from shared import topics
from shared.auth import OrganiserScope
from shared.crypto import KeyStore
from shared.errors import InvalidInput
from shared.events import catalog as ev
from shared.uow import UnitOfWork, UnitsOfWork

COUNTED = queries.COUNTED


@dataclass(frozen=True)
class LetterConfirmation:
    letter: Row
    already: bool


@dataclass(frozen=True)
class ActionOutcome:
    action_id: str
    already: bool
    count: int
    constituency: Constituency | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


class ActionsService:
    def __init__(self, uows: UnitsOfWork, *, secret_key: str) -> None:
        self.uows = uows
        self.keys = KeyStore(tables.subject_keys, KEY_OWNER)
        self.secret_key = secret_key
        self.links = MemberLinks(secret_key=secret_key)

    # use cases -----------------------------------------------------------------------------------------
    async def take_action(self, ask_id: str, form: ActionForm, *, source: str = "form") -> ActionOutcome:
        """Record an action once per person and ask and publish ActionTaken; a letter to an MP waits for its writer
        to confirm it (`confirm_letter`) from the link notifications emails them.

        Again from the same person: nothing changes, and the action's own address (not the one who typed it) is
        told (ActionRepeated, or the letter's confirmation link again).
        Refused with nothing stored: a closed campaign or ask, a postcode with no constituency for an MP letter.
        """
        x = tables.actions
        async with self.uows.begin() as uow:
            session = uow.session
            ask = await self._ask(session, ask_id)
            constituency = None
            if ask.kind == "write_to_mp":
                constituency = await queries.find_constituency(session, form.postcode or "")
            member_id = form.member_id or await self.links.member_of_address(session, form.email)
            member = await queries.member(session, member_id)
            region_id, group_id = place_of(member.region_id, member.group_ids) if member else (None, None)
            action = accept_action(ask, form, action_id=str(uuid.uuid4()), constituency=constituency,
                                   region_id=region_id, group_id=group_id, source=source,
                                   secret_key=self.secret_key, now=utcnow(), member_id=member_id)
            inserted = (await session.execute(
                pg_insert(x).values(**action.row()).on_conflict_do_nothing(constraint="uq_actions_ask_person")
                .returning(x.c.id)
            )).first()
            if inserted is None:  # this person already took this action: counted once
                existing = (await session.execute(
                    select(x).where(x.c.ask_id == ask_id, x.c.person_ref == action.person_ref)
                )).one()
                their_key, issued = await self.keys.get_or_create(session, existing.id)
                await uow.emit_all(repeat_events(existing, ask, their_key, key_issued=issued,
                                                 constituency_name=await self._constituency_name(session, existing)))
                return ActionOutcome(existing.id, True, await self._count(session, ask_id), constituency)
            key, issued = await self.keys.get_or_create(session, action.id) if action.needs_key else (None, False)
            if action.awaits_confirmation:
                assert key is not None  # a letter has its writer's name and address
                await uow.emit_all(action.confirmation_events(key, key_issued=issued))
            else:
                await uow.emit_all(action.events(key, key_issued=issued))
            return ActionOutcome(action.id, False, await self._count(session, ask_id), constituency)

    async def confirm_letter(self, action_id: str) -> LetterConfirmation:
        """The writer confirmed their letter from the emailed link: it goes to the MP (MpLetterRequested) and
        counts (ActionTaken), once; a second confirmation changes nothing."""
        x = tables.actions
        async with self.uows.begin() as uow:
            session = uow.session
            row = (await session.execute(select(x).where(x.c.id == action_id).with_for_update())).first()
            if row is None or row.kind != "write_to_mp" or row.email is None:
                raise ActionNotFound(action_id)
            if row.letter_confirmed_at is not None:
                return LetterConfirmation(row, already=True)
            ask = await self._ask(session, row.ask_id)
            reason = closed_reason(campaign_status=ask.campaign_status, ask_status=ask.status)
            if reason:
                raise ActionRefused(reason)
            constituency = await self._constituency(session, row.constituency_code)
            if constituency is None or not constituency.mp_email:
                raise ActionRefused("We no longer have an email address for this MP, so we cannot send your "
                                    "letter. Please write to them again from the campaign's page.")
            now = utcnow()
            await session.execute(update(x).where(x.c.id == action_id).values(letter_confirmed_at=now))
            key, issued = await self.keys.get_or_create(session, action_id)
            await uow.emit_all(stored_action(row, ask, constituency, now=now).events(key, key_issued=issued))
            return LetterConfirmation(row, already=False)

    async def letter(self, action_id: str) -> Row:
        """A letter as its writer sees it on the confirmation page."""
        x = tables.actions
        async with self.uows.begin() as uow:
            row = (await uow.session.execute(select(x).where(x.c.id == action_id))).first()
        if row is None or row.kind != "write_to_mp" or row.email is None:
            raise ActionNotFound(action_id)
        return row

    async def _constituency(self, session: AsyncSession, code: str | None) -> Constituency | None:
        c = tables.constituencies
        r = (await session.execute(select(c).where(c.c.code == code))).first() if code else None
        return Constituency(r.code, r.name, r.mp_name, r.mp_party, r.mp_email) if r else None

    async def _constituency_name(self, session: AsyncSession, action: Row) -> str | None:
        found = await self._constituency(session, action.constituency_code) if action.kind == "write_to_mp" else None
        return found.name if found else None

    async def _ask(self, session: AsyncSession, ask_id: str) -> Ask:
        """The ask and its campaign's status, the campaign share-locked (closing it waits for this action)."""
        a = tables.asks
        row = await queries.one(session, select(a).where(a.c.id == ask_id), AskNotFound(ask_id))
        campaign = await queries.locked_campaign(session, row.campaign_id, share=True)
        return Ask(row.id, row.campaign_id, row.kind, row.status, campaign.status)

    async def _count(self, session: AsyncSession, ask_id: str) -> int:
        x = tables.actions
        return int((await session.execute(
            select(func.count()).where(x.c.ask_id == ask_id, COUNTED)
        )).scalar_one())

    async def moderate(self, action_id: str, decision: str, organiser: OrganiserScope) -> str:
        """Approve or reject a pledge for public display; returns the new state."""
        if decision not in ("approved", "rejected", "pending"):
            raise InvalidInput({"decision": "Choose approve or reject"})
        x = tables.actions
        async with self.uows.begin() as uow:
            session = uow.session
            row = (await session.execute(select(x).where(x.c.id == action_id).with_for_update())).first()
            if row is None or row.kind != "pledge":
                raise ActionNotFound(action_id)
            campaign = await queries.locked_campaign(session, row.campaign_id, share=True)
            await check_scope(session, organiser, campaign.scope_type, campaign.scope_id)
            now = utcnow()
            await session.execute(update(x).where(x.c.id == action_id).values(
                moderation=decision, moderated_by=organiser.organiser_id, moderated_at=now))
            if publishes_pledge(row.moderation, decision):
                await uow.emit(ev.PledgePublished(action_id=row.id, ask_id=row.ask_id, campaign_id=row.campaign_id,
                                                  member_id=row.member_id, published_at=now))
        return decision

    # reactions to other services' events ---------------------------------------------------------------
    async def member_erased(self, uow: UnitOfWork, member_id: str) -> None:
        """Blank the member's name, address and words on their actions (counts stay, and the member id: they are still
        theirs) and shred the actions' keys."""
        x = tables.actions
        session = uow.session
        erased = (await session.execute(
            update(x).where(x.c.member_id == member_id)
            .values(name=None, email=None, postcode=None, comment=None, pledge_text=None,
                    letter_subject=None, letter_body=None, person_ref=func.concat("erased:", x.c.id))
            .returning(x.c.id)
        )).scalars().all()
        await self.keys.shred(session, erased, uow.outbox, topics.CAMPAIGNS_SUBJECT_KEYS)

    async def rsvp_received(self, uow: UnitOfWork, event: ev.RsvpReceived) -> None:
        """An RSVP to a meeting an attend ask points at is that ask's action (once per person and ask)."""
        a, c, x = tables.asks, tables.campaigns, tables.actions
        session = uow.session
        asks = (await session.execute(
            select(a).join(c, c.c.id == a.c.campaign_id)
            .where(a.c.kind == "attend", a.c.meeting_id == event.meeting_id, a.c.status == "open",
                   c.c.status == "live")
        )).all()
        member = await queries.member(session, event.member_id)
        region_id, group_id = place_of(member.region_id, member.group_ids) if member else (None, None)
        for ask in asks:
            action_id = attend_action_id(ask.id, event.rsvp_id)
            ref = f"member:{event.member_id}" if event.member_id else f"rsvp:{event.rsvp_id}"
            now = utcnow()
            inserted = (await session.execute(
                pg_insert(x).values(
                    id=action_id, ask_id=ask.id, campaign_id=ask.campaign_id, kind="attend", person_ref=ref,
                    member_id=event.member_id, rsvp_id=event.rsvp_id, source="meeting",
                    region_id=region_id, group_id=group_id, created_at=now,
                ).on_conflict_do_nothing().returning(x.c.id)
            )).first()
            if inserted is not None:
                await uow.emit(ev.ActionTaken(
                    action_id=action_id, ask_id=ask.id, campaign_id=ask.campaign_id, kind="attend",
                    member_id=event.member_id, region_id=region_id, group_id=group_id, taken_at=now,
                ))

    # queries -------------------------------------------------------------------------------------------
    async def counts(self, campaign_id: str) -> dict[str, int]:
        """Actions per ask of a campaign (pledges counted when made; shown once approved)."""
        x = tables.actions
        async with self.uows.begin() as uow:
            rows = (await uow.session.execute(
                select(x.c.ask_id, func.count()).where(x.c.campaign_id == campaign_id, COUNTED)
                .group_by(x.c.ask_id))).all()
        return {ask_id: int(n) for ask_id, n in rows}

    async def totals(self, campaign_ids: Sequence[str]) -> dict[str, int]:
        """The actions counted for each of these campaigns (as `counts` counts them), in one query; 0 for none."""
        if not campaign_ids:
            return {}
        async with self.uows.begin() as uow:
            return await queries.counted_actions(uow.session, campaign_ids)

    async def pledges(self, *, ask_id: str | None = None, campaign_ids: Sequence[str] | None = None,
                      moderation: str = "approved", limit: int = 100) -> list[Row]:
        x = tables.actions
        q = select(x).where(x.c.kind == "pledge", x.c.moderation == moderation, x.c.pledge_text.is_not(None))
        if ask_id is not None:
            q = q.where(x.c.ask_id == ask_id)
        if campaign_ids is not None:
            q = q.where(x.c.campaign_id.in_(list(campaign_ids)))
        q = q.order_by(x.c.created_at.desc() if moderation == "approved" else x.c.created_at).limit(limit)
        async with self.uows.begin() as uow:
            return list((await uow.session.execute(q)).all())

    async def actions_of(self, ask_id: str, *, limit: int, offset: int) -> list[Row]:
        x = tables.actions
        async with self.uows.begin() as uow:
            return list((await uow.session.execute(
                select(x).where(x.c.ask_id == ask_id).order_by(x.c.created_at, x.c.id).limit(limit).offset(offset)
            )).all())

    async def get_action(self, action_id: str) -> Row:
        x = tables.actions
        async with self.uows.begin() as uow:
            return await queries.one(uow.session, select(x).where(x.c.id == action_id), ActionNotFound(action_id))

