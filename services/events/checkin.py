"""Check-in: organisers mark people as there or add walk-ins at the door; people check themselves in with the code
shown at the venue. Each records AttendanceRecorded once; the rules (who counts, when the code works) are in
domain.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.events import queries
from services.events.domain import (
    CheckInRefused,
    Places,
    Rsvp,
    RsvpForm,
    RsvpNotFound,
    attend,
    desk_matches,
    person_ref,
    self_check_in_refusal,
    walk_in_method,
)
from services.events.meetings import check_scope
from services.events.members import MemberReadModel
from services.events.queries import utcnow
from services.events.rsvps import Rsvps, rsvp_values
from shared.auth import OrganiserScope
from shared.uow import UnitOfWork, UnitsOfWork


async def mark_attended(uow: UnitOfWork, meeting: Any, rsvp: Rsvp, method: str) -> bool:
    """Record that someone is there (False when they already were); someone from the waitlist takes a place."""
    now = utcnow()
    attendance = attend(Places.of(meeting), rsvp, method=method, now=now)
    if attendance is None:
        return False
    if attendance.from_waitlist:
        await queries.mark_going(uow.session, [rsvp.id])
        await queries.take_places(uow.session, meeting.id, rsvp.party)
    await queries.mark_attended(uow.session, rsvp.id, method, now)
    await uow.emit(*attendance.events)
    return True


@dataclass(frozen=True)
class DeskEntry:
    """Someone with a place or on the waitlist, as the check-in desk lists them: a member by the name and address
    membership knows, whether or not they typed them when they RSVPed."""

    id: str
    name: str
    email: str
    member: bool
    guests: int
    status: str
    waitlist_position: int | None
    attended_at: datetime | None


class CheckIn:
    def __init__(self, uows: UnitsOfWork, rsvps: Rsvps, members: MemberReadModel, *, secret_key: str) -> None:
        self.uows = uows
        self.rsvps = rsvps
        self.members = members
        self.secret_key = secret_key

    async def desk(self, meeting_id: str, *, search: str = "") -> tuple[list[DeskEntry], dict[str, int]]:
        """Everyone going or waitlisted whose name or address matches `search`, and the meeting's counts (as
        `Rsvps.counts`), in one transaction. Members' names are sealed here (opened with the copy of their key), so
        the match is made on the opened names, not in SQL."""
        async with self.uows.begin() as uow:
            rows = await queries.list_rsvps(uow.session, meeting_id, statuses=("going", "waitlisted"), limit=100_000)
            contacts = await self.members.contacts(uow.session, (r.member_id for r in rows))
            counts = await queries.count_rsvps(uow.session, meeting_id)
        entries = []
        for r in rows:
            known = contacts.get(r.member_id or "")
            name = r.name or (known.name if known else "") or "Member (name not available)"
            email = r.email or (known.email if known else "")
            if desk_matches(search, name, email, known.name if known else None, known.email if known else None):
                entries.append(DeskEntry(r.id, name, email, r.member_id is not None, r.guests, r.status,
                                         r.waitlist_position, r.attended_at))
        return sorted(entries, key=lambda e: (e.status, e.waitlist_position or 0, e.name.lower())), counts

    async def record_attendance(self, meeting_id: str, rsvp_id: str, method: str = "organiser",
                                organiser: OrganiserScope | None = None) -> bool:
        """Mark someone as there (idempotent): AttendanceRecorded the first time only."""
        async with self.uows.begin() as uow:
            meeting = await queries.locked_meeting(uow.session, meeting_id)
            await check_scope(uow.session, organiser, meeting.scope_type, meeting.scope_id)
            rsvp = await queries.locked_rsvp(uow.session, rsvp_id, meeting_id)
            if rsvp is None:
                raise RsvpNotFound(rsvp_id)
            return await mark_attended(uow, meeting, Rsvp.of(rsvp), method)

    async def walk_in(self, meeting_id: str, form: RsvpForm, organiser: OrganiserScope | None,
                      method: str = "walk_in", source: str = "walk_in") -> str:
        """Someone turned up: their existing RSVP is marked, or a new one (a place, whatever the capacity) made."""
        now = utcnow()
        ref = self.rsvps.person_ref(form)
        form = await self.rsvps.recognised(form)
        async with self.uows.begin() as uow:
            meeting = await queries.locked_meeting(uow.session, meeting_id)
            await check_scope(uow.session, organiser, meeting.scope_type, meeting.scope_id)
            row = await queries.rsvp_of(uow.session, meeting_id, ref)
            existing = Rsvp.of(row) if row is not None else None
            method = walk_in_method(Places.of(meeting), existing, method)
            if existing is not None and existing.stands:
                await mark_attended(uow, meeting, existing, method)
                return existing.id
            rsvp_id = existing.id if existing is not None else str(uuid.uuid4())
            values = {**rsvp_values(form, status="going", position=None, source=source, now=now), "attended_at": None}
            await queries.save_rsvp(uow.session, rsvp_id, values, new=existing is None, meeting_id=meeting_id,
                                    person_ref=ref)
            await queries.take_places(uow.session, meeting_id, 1 + form.guests)
            await uow.emit(*await self.rsvps.received(uow, meeting_id, rsvp_id, form, "going", None))
            walked_in = Rsvp(rsvp_id, "going", form.guests, form.member_id)
            await mark_attended(uow, meeting, walked_in, method)
        return rsvp_id

    async def self_check_in(self, meeting_id: str, code: str, email: str, member_id: str | None = None) -> str:
        """Check in with the code shown at the venue; the person is found by their RSVP's email (or member link)."""
        async with self.uows.begin() as uow:
            meeting = await queries.locked_meeting(uow.session, meeting_id)
            refusal = self_check_in_refusal(status=meeting.status, starts_at=meeting.starts_at,
                                            ends_at=meeting.ends_at, expected_code=meeting.check_in_code, code=code,
                                            now=utcnow())
            if refusal:
                raise CheckInRefused(refusal)
            refs = [person_ref(member_id=None, email=email, secret_key=self.secret_key)]
            if member_id:
                refs.append(person_ref(member_id=member_id, email=None, secret_key=self.secret_key))
            rsvp = await queries.locked_rsvp_of_any(uow.session, meeting_id, refs)
            if rsvp is None:
                raise CheckInRefused(
                    "We cannot find an RSVP with that email address. Ask an organiser to add you at the door."
                )
            await mark_attended(uow, meeting, Rsvp.of(rsvp), "self_check_in")
            return rsvp.id
