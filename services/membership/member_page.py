"""An organiser's page about one member: a timeline of everything the person did across the services, the notes
organisers keep about them and their tags.

Membership never reads another service's database: what a member did elsewhere arrives as events (RSVPs and
attendance from events, actions from campaigns, emails from notifications) and is kept in `member_activity`,
without personal data (what, when, which meeting or campaign, a word of detail; never an email's content). A
notes' text is sealed with the member's key, so erasing the member shreds it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.membership import db as tables
from services.membership.directory import UnitRow, read_units_of
from services.membership.domain import OWNER
from services.membership.roster import Roster, actor_of
from shared import auth
from shared.crypto import KeyDestroyed, KeyStore
from shared.errors import InvalidInput
from shared.events.catalog import (
    ActionLinkedToMember,
    ActionTaken,
    AttendanceRecorded,
    NotificationFailed,
    NotificationSent,
    RsvpCancelled,
    RsvpLinkedToMember,
    RsvpReceived,
)
from shared.events.envelope import Envelope, Sealed
from shared.uow import UnitOfWork, UnitsOfWork

MAX_NOTE = 2000
MAX_TAG = 100
ACTION_WORDS = {
    "petition": "Signed the petition",
    "pledge": "Made a pledge",
    "write_to_mp": "Wrote to their MP",
    "attend": "Said they would attend",
    "share": "Shared",
}
RSVP_WORDS = {"going": "Said they are going to", "waitlisted": "Joined the waiting list for"}


@dataclass(frozen=True)
class Entry:
    """One line of the timeline: when, and what in words (names, never ids)."""

    at: datetime
    text: str


@dataclass(frozen=True)
class Note:
    at: datetime
    author_id: str  # the organiser who wrote it
    text: str


@dataclass(frozen=True)
class MemberView:
    """Everything the member page shows, read in one transaction."""

    details: dict[str, Any]  # Roster.details: the member, their places, consents and roles
    units: dict[str, list[UnitRow]]
    timeline: list[Entry]
    last_action: datetime | None
    notes: list[Note]
    authors: dict[str, str]  # the notes' authors' names by organiser id
    tagged: list[Any]
    other_tags: list[Any]


async def _member_exists(session: AsyncSession, member_id: str | None) -> bool:
    if not member_id:
        return False
    m = tables.members
    return (await session.execute(select(m.c.id).where(m.c.id == member_id))).first() is not None


async def _record(
    session: AsyncSession, member_id: str | None, kind: str, ref_id: str, at: datetime,
    subject_id: str | None = None, detail: str = "",
) -> None:
    """Keep one thing a member did; a redelivered event (same kind and reference) adds nothing."""
    if not await _member_exists(session, member_id):
        return  # not a member (an address only, an organiser, an action's own id): nothing for a member's page
    a = tables.member_activity
    await session.execute(
        pg_insert(a)
        .values(member_id=member_id, kind=kind, ref_id=ref_id, subject_id=subject_id, detail=detail[:40], at=at)
        .on_conflict_do_nothing(constraint="uq_member_activity_kind_ref_id")
    )


async def _rsvp_member(session: AsyncSession, event: RsvpCancelled | AttendanceRecorded) -> str | None:
    """The member an RSVP belongs to: the event's own id, or the one its RSVP was recorded (or linked) for."""
    if event.member_id:
        return event.member_id
    a = tables.member_activity
    found = await session.execute(select(a.c.member_id).where(a.c.kind == "rsvp", a.c.ref_id == event.rsvp_id))
    return found.scalar()


# `_record` of "email_sent" for many events at once: rows for the ids that are members, in one round trip.
RECORD_EMAILS_SENT_SQL = text(
    "INSERT INTO member_activity (member_id, kind, ref_id, subject_id, detail, at) "
    "SELECT m.id, 'email_sent', e.ref_id, NULL, e.detail, e.at FROM unnest(CAST(:member_ids AS text[]), "
    "CAST(:ref_ids AS text[]), CAST(:details AS text[]), CAST(:ats AS timestamptz[])) AS e(member_id, ref_id, "
    "detail, at) JOIN members m ON m.id = e.member_id "
    "ON CONFLICT ON CONSTRAINT uq_member_activity_kind_ref_id DO NOTHING"
)


class MemberActivity:
    """The handlers that keep `member_activity`: what members did in the other services."""

    @staticmethod
    async def rsvp_received(uow: UnitOfWork, envelope: Envelope, event: RsvpReceived) -> None:
        await _record(uow.session, event.member_id, "rsvp", event.rsvp_id, envelope.occurred_at,
                      event.meeting_id, event.status)

    @staticmethod
    async def rsvp_linked(uow: UnitOfWork, envelope: Envelope, event: RsvpLinkedToMember) -> None:
        """An RSVP made with the member's address before events knew them: theirs now, attendance included."""
        session = uow.session
        status = "going" if event.status == "cancelled" else event.status
        await _record(session, event.member_id, "rsvp", event.rsvp_id, envelope.occurred_at, event.meeting_id, status)
        if event.status == "cancelled":
            await _record(session, event.member_id, "rsvp_cancelled", event.rsvp_id, envelope.occurred_at,
                          event.meeting_id)
        if event.attended_at:
            await _record(session, event.member_id, "attended", event.rsvp_id, event.attended_at, event.meeting_id)

    @staticmethod
    async def rsvp_cancelled(uow: UnitOfWork, envelope: Envelope, event: RsvpCancelled) -> None:
        member_id = await _rsvp_member(uow.session, event)
        await _record(uow.session, member_id, "rsvp_cancelled", event.rsvp_id, envelope.occurred_at, event.meeting_id)

    @staticmethod
    async def attendance_recorded(uow: UnitOfWork, envelope: Envelope, event: AttendanceRecorded) -> None:
        member_id = await _rsvp_member(uow.session, event)
        await _record(uow.session, member_id, "attended", event.rsvp_id, event.attended_at, event.meeting_id,
                      event.method)

    @staticmethod
    async def action_taken(uow: UnitOfWork, envelope: Envelope, event: ActionTaken | ActionLinkedToMember) -> None:
        await _record(uow.session, event.member_id, "action", event.action_id, event.taken_at, event.campaign_id,
                      event.kind)

    @staticmethod
    async def notification_sent(uow: UnitOfWork, envelope: Envelope, event: NotificationSent) -> None:
        await _record(uow.session, event.recipient_id, "email_sent", event.delivery_id, event.sent_at,
                      detail=event.kind)

    @staticmethod
    async def notifications_sent(uow: UnitOfWork, run: list[tuple[Envelope, NotificationSent]]) -> None:
        """A run of NotificationSent (a mailing's or an announcement's emails, one member each) kept in one
        statement, with the effect of `notification_sent` for each: only members', a redelivered one adding
        nothing."""
        await uow.session.execute(RECORD_EMAILS_SENT_SQL, {
            "member_ids": [event.recipient_id for _, event in run],
            "ref_ids": [event.delivery_id for _, event in run],
            "details": [event.kind[:40] for _, event in run],
            "ats": [event.sent_at for _, event in run],
        })

    @staticmethod
    async def notification_failed(uow: UnitOfWork, envelope: Envelope, event: NotificationFailed) -> None:
        """Only that it failed: the relay's error text can echo the address, so it is not kept."""
        kind = "email_failed" if event.permanent else "email_delayed"
        await _record(uow.session, event.recipient_id, kind, event.delivery_id, envelope.occurred_at,
                      detail=event.kind)


TIMELINE_WORDS = {
    "rsvp": "{rsvp} {meeting}",
    "rsvp_cancelled": "Cancelled their place at {meeting}",
    "attended": "Attended {meeting}",
    "action": "{action} in {campaign}",
    "email_sent": "Was sent an email: {email}",
    "email_failed": "An email could not be delivered: {email}",
    "email_delayed": "An email is delayed: {email}",
}


def _words(row: Any) -> str:
    """A timeline line from an activity row and the title of its meeting or campaign (if membership knows it)."""
    return TIMELINE_WORDS.get(row.kind, row.kind).format(
        meeting=row.meeting_title or "a meeting",
        campaign=row.campaign_title or "a campaign",
        email=(row.detail or "email").replace("_", " "),
        rsvp=RSVP_WORDS.get(row.detail, "Replied to"),
        action=ACTION_WORDS.get(row.detail, "Took an action"),
    )


class MemberPage:
    """What the member page reads and what organisers change on it (notes, tags); the caller checked the scope."""

    def __init__(self, uows: UnitsOfWork) -> None:
        self.uows = uows
        self.keys = KeyStore(tables.subject_keys, OWNER)

    async def view(self, who: auth.OrganiserScope, member_id: str, *, audit: bool = True) -> MemberView | None:
        """The member page of a member `who` looks after (None otherwise, as if there were none): one transaction
        of nine statements whatever the member did, and for notes their authors and keys (it was five transactions
        and about twenty statements)."""
        async with self.uows.begin() as uow:
            session = uow.session
            row = await Roster.scoped_member(session, who, member_id)
            if row is None:
                return None
            details = await Roster.details(session, row)  # with the names of the member's own units
            units = await read_units_of(session, [r.scope_id for r in details["roles"]])  # for their roles' words
            timeline, last_action = await self._timeline(session, row, details["consents"])
            tagged, other_tags = await self._tags(session, member_id)
            notes = await self._notes(session, member_id)
            authors = await self._authors(session, notes)
            if audit:
                await Roster.audit(session, actor_of(who), "member.view", member_id=member_id)
        return MemberView(details, units, timeline, last_action, notes, authors, tagged, other_tags)

    @staticmethod
    async def _timeline(session: AsyncSession, member: Any, consents: list[Any]) -> tuple[list[Entry], datetime | None]:
        """Everything the member did, newest first, and when they last took an action."""
        a, pm, pc = tables.member_activity, tables.public_meetings, tables.public_campaigns
        entries = [Entry(member.joined_at, "Joined the network")]
        if member.confirmed_at:
            entries.append(Entry(member.confirmed_at, "Confirmed their email address"))
        if member.left_at:
            entries.append(Entry(member.left_at, "Left the network"))
        rows = (
            await session.execute(
                select(a, pm.c.title.label("meeting_title"), pc.c.title.label("campaign_title"))
                .outerjoin(pm, pm.c.meeting_id == a.c.subject_id)
                .outerjoin(pc, pc.c.campaign_id == a.c.subject_id)
                .where(a.c.member_id == member.id)
            )
        ).all()
        entries += [Entry(r.at, _words(r)) for r in rows]
        entries += [
            Entry(r.recorded_at, "Agreed to be emailed" if r.granted else "Asked not to be emailed")
            for r in consents
        ]
        entries.sort(key=lambda e: e.at, reverse=True)
        last_action = max((r.at for r in rows if r.kind == "action"), default=None)
        return entries, last_action

    @staticmethod
    async def _tags(session: AsyncSession, member_id: str) -> tuple[list[Any], list[Any]]:
        """The member's tags and the other tags there are (to pick from), by name: one statement."""
        t, g = tables.tags, tables.taggings
        theirs = exists().where(g.c.tag_id == t.c.id, g.c.member_id == member_id)
        rows = (await session.execute(
            select(t.c.id, t.c.name, theirs.label("theirs")).order_by(func.lower(t.c.name))
        )).all()
        return [r for r in rows if r.theirs], [r for r in rows if not r.theirs]

    async def _notes(self, session: AsyncSession, member_id: str) -> list[Note]:
        """Organisers' notes about the member, newest first (a note whose key is destroyed is left out)."""
        n = tables.member_notes
        rows = (
            await session.execute(select(n).where(n.c.member_id == member_id).order_by(n.c.at.desc(), n.c.id))
        ).all()
        notes = []
        for r in rows:
            try:
                text = await self.keys.unseal(session, Sealed.model_validate(r.text)) or ""
            except KeyDestroyed:
                continue
            notes.append(Note(r.at, r.author_id, text))
        return notes

    @staticmethod
    async def _authors(session: AsyncSession, notes: list[Note]) -> dict[str, str]:
        if not notes:
            return {}
        o = tables.organisers
        ids = sorted({note.author_id for note in notes})
        rows = (await session.execute(select(o.c.id, o.c.name).where(o.c.id.in_(ids)))).all()
        return {r.id: r.name for r in rows if r.name}

    # notes ---------------------------------------------------------------------------------------
    async def add_note(self, who: auth.OrganiserScope, member_id: str, text: str) -> None:
        text = text.strip()
        if not text or len(text) > MAX_NOTE:
            raise InvalidInput({"note": f"Write a note of 1 to {MAX_NOTE} characters"})
        async with self.uows.begin() as uow:
            session = uow.session
            sealed = await self.keys.seal(session, member_id, text)
            await session.execute(
                tables.member_notes.insert().values(
                    id=str(uuid.uuid4()), member_id=member_id, author_id=who.organiser_id, text=sealed.model_dump()
                )
            )
            await Roster.audit(session, actor_of(who), "member.note", member_id=member_id)

    # tags ----------------------------------------------------------------------------------------
    async def tag(self, who: auth.OrganiserScope, member_id: str, name: str) -> None:
        """Tag the member with the tag of that name (any case), made if there is none yet."""
        name = " ".join(name.split())
        if not name or len(name) > MAX_TAG:
            raise InvalidInput({"new_tag": f"Choose a tag or write a new one of 1 to {MAX_TAG} characters"})
        t, g = tables.tags, tables.taggings
        actor = actor_of(who)
        async with self.uows.begin() as uow:
            session = uow.session
            tag_id = (await session.execute(select(t.c.id).where(func.lower(t.c.name) == name.lower()))).scalar()
            if tag_id is None:
                tag_id = str(uuid.uuid4())
                await session.execute(pg_insert(t).values(id=tag_id, name=name, created_by=actor))
            await session.execute(
                pg_insert(g)
                .values(id=str(uuid.uuid4()), tag_id=tag_id, member_id=member_id, created_by=actor)
                .on_conflict_do_nothing()
            )
            await Roster.audit(session, actor, "member.tag", member_id=member_id, tag=name)

    async def tag_name(self, member_id: str, tag_id: str) -> str | None:
        t, g = tables.tags, tables.taggings
        async with self.uows.begin() as uow:
            found = await uow.session.execute(
                select(t.c.name).join(g, g.c.tag_id == t.c.id).where(g.c.member_id == member_id, t.c.id == tag_id)
            )
            return found.scalar()

    async def untag(self, who: auth.OrganiserScope, member_id: str, tag_id: str) -> None:
        g = tables.taggings
        async with self.uows.begin() as uow:
            await uow.session.execute(delete(g).where(g.c.member_id == member_id, g.c.tag_id == tag_id))
            await Roster.audit(uow.session, actor_of(who), "member.untag", member_id=member_id, tag_id=tag_id)
