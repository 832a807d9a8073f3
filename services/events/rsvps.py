"""RSVPs and the waitlist: a place or a waitlist position for each RSVP, cancellations, and freed places handed on.

Places are handed out under a row lock on the meeting (SELECT … FOR UPDATE), so simultaneous RSVPs queue on that
one row and the counters `going_count` / `waitlist_last` can never overshoot; who gets what is decided in domain.py.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Row

from services.events import queries
from services.events.domain import (
    Places,
    Rsvp,
    RsvpForm,
    RsvpNotFound,
    RsvpRefused,
    cancel_rsvp,
    decide_rsvp,
    person_ref,
    promote_from_waitlist,
    rsvp_closed_reason,
)
from services.events.queries import utcnow
from shared.contact import address_hash
from shared.crypto import KeyStore, encode_key, seal
from shared.events import catalog as ev
from shared.events.envelope import EventData
from shared.uow import UnitOfWork, UnitsOfWork

OWNER = "events"  # the owner of the per-RSVP keys that seal personal fields


@dataclass(frozen=True)
class RsvpOutcome:
    rsvp_id: str
    status: str
    waitlist_position: int | None
    already: bool = False


def rsvp_values(form: RsvpForm, *, status: str, position: int | None, source: str, now: datetime) -> dict[str, Any]:
    """An RSVP row's fields as the person gave them (over a cancelled RSVP of theirs, the same row is reused)."""
    return {"member_id": form.member_id, "name": form.name, "email": form.email, "status": status,
            "waitlist_position": position, "guests": form.guests, "join_network": form.join_network,
            "source": source, "updated_at": now, "cancelled_at": None}


async def hand_out_freed_places(uow: UnitOfWork, places: Places) -> list[EventData]:
    """Give the meeting's free places to its waitlist in order (after a cancellation or more capacity)."""
    if not places.hands_out_places:
        return []
    waiting = [Rsvp.of(row) for row in await queries.locked_waitlist(uow.session, places.meeting_id)]
    promotion = promote_from_waitlist(places, waiting)
    await queries.mark_going(uow.session, [rsvp.id for rsvp in promotion.promoted])
    if promotion.going_count != places.going_count:
        await queries.set_going_count(uow.session, places.meeting_id, promotion.going_count)
    return promotion.events


class Rsvps:
    def __init__(self, uows: UnitsOfWork, keys: KeyStore, *, secret_key: str) -> None:
        self.uows = uows
        self.keys = keys
        self.secret_key = secret_key
        # RSVPs to one meeting queue here, in this process, before taking a database connection: they would
        # otherwise each hold a pooled connection while waiting for the meeting's row lock, and a surge of
        # RSVPs to one meeting would leave no connection for anything else (the row lock still orders
        # RSVPs across processes).
        self._queues: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def person_ref(self, form: RsvpForm) -> str:
        return person_ref(member_id=form.member_id, email=form.email, secret_key=self.secret_key)

    async def recognised(self, form: RsvpForm) -> RsvpForm:
        """The form as the member's own when its address is a member's (docs/decisions/0008): the RSVP and its
        events carry their member id; it is still found by the address it was made with (its person ref). Read in
        a transaction of its own, before the RSVP waits for its meeting's lock."""
        if form.member_id or not form.email:
            return form
        async with self.uows.begin() as uow:
            member_id = await queries.member_with_hash(uow.session, address_hash(self.secret_key, form.email))
        return replace(form, member_id=member_id) if member_id else form

    async def rsvp(self, meeting_id: str, form: RsvpForm, *, source: str = "form") -> RsvpOutcome:
        """Give the person a place if their party fits and nobody waits before them; otherwise the waitlist."""
        now = utcnow()
        ref = self.person_ref(form)
        form = await self.recognised(form)
        queue = self._queues.get(meeting_id)
        if queue is None:
            queue = self._queues[meeting_id] = asyncio.Lock()
        async with queue, self.uows.begin() as uow:
            meeting = await queries.locked_meeting(uow.session, meeting_id)
            reason = rsvp_closed_reason(status=meeting.status, starts_at=meeting.starts_at,
                                        ends_at=meeting.ends_at, rsvp_deadline=meeting.rsvp_deadline, now=now)
            if reason:
                raise RsvpRefused(reason)
            row = await queries.rsvp_of(uow.session, meeting_id, ref)
            existing = Rsvp.of(row) if row is not None else None
            decision = decide_rsvp(Places.of(meeting), party=1 + form.guests, existing=existing,
                                   someone_waiting=await queries.someone_waiting(uow.session, meeting_id))
            if decision.already:
                assert existing is not None
                if form.email:  # only the address's owner hears of it (decision "repeats reveal nothing")
                    await uow.emit(ev.RsvpRepeated(meeting_id=meeting_id, rsvp_id=existing.id,
                                                   member_id=existing.member_id))
                return RsvpOutcome(existing.id, decision.status, decision.waitlist_position, already=True)
            await queries.take_places(uow.session, meeting_id, decision.places_taken, decision.waitlist_position)
            rsvp_id = existing.id if existing is not None else str(uuid.uuid4())
            values = rsvp_values(form, status=decision.status, position=decision.waitlist_position, source=source,
                                 now=now)
            await queries.save_rsvp(uow.session, rsvp_id, values, new=existing is None, meeting_id=meeting_id,
                                    person_ref=ref)
            await uow.emit(*await self.received(uow, meeting_id, rsvp_id, form, decision.status,
                                                decision.waitlist_position))
        return RsvpOutcome(rsvp_id, decision.status, decision.waitlist_position)

    async def received(self, uow: UnitOfWork, meeting_id: str, rsvp_id: str, form: RsvpForm, status: str,
                       position: int | None) -> list[EventData]:
        """RsvpReceived; personal fields sealed with the RSVP's own key, issued first on events.subject-keys."""
        events: list[EventData] = []
        sealed: dict[str, Any] = {}
        if form.email or form.name:
            key, created = await self.keys.get_or_create(uow.session, rsvp_id)
            if created:
                events.append(ev.RsvpKeyIssued(key_id=rsvp_id, key=encode_key(key)))
            for name in ("email", "name", "postcode"):
                value = getattr(form, name)
                if value:
                    sealed[name] = seal(value, key, key_id=rsvp_id, owner=OWNER)
        events.append(
            ev.RsvpReceived(meeting_id=meeting_id, rsvp_id=rsvp_id, member_id=form.member_id, status=status,
                            waitlist_position=position, guests=form.guests, join_network=form.join_network,
                            email_consent=form.email_consent, **sealed)  # type: ignore[arg-type]
        )
        return events

    async def cancel(self, rsvp_id: str) -> list[str]:
        """Cancel an RSVP (idempotent); a freed place goes to the first on the waitlist. Returns who was promoted."""
        async with self.uows.begin() as uow:
            meeting_id = await queries.meeting_of_rsvp(uow.session, rsvp_id)
            if meeting_id is None:
                raise RsvpNotFound(rsvp_id)
            meeting = await queries.locked_meeting(uow.session, meeting_id)  # lock order: the meeting, then its RSVPs
            row = await queries.locked_rsvp(uow.session, rsvp_id)
            assert row is not None  # an RSVP is never deleted while its meeting stands
            cancellation = cancel_rsvp(Places.of(meeting), Rsvp.of(row))
            if cancellation is None:
                return []
            await queries.mark_cancelled(uow.session, rsvp_id)
            events = list(cancellation.events)
            if cancellation.places_freed:
                await queries.take_places(uow.session, meeting_id, -cancellation.places_freed)
                events += await hand_out_freed_places(uow, cancellation.places)
            await uow.emit(*events)
        return [e.rsvp_id for e in events if isinstance(e, ev.PromotedFromWaitlist)]

    # what organisers and the person see ------------------------------------------------------------------------
    async def get(self, rsvp_id: str) -> Row:
        async with self.uows.begin() as uow:
            return await queries.get_rsvp(uow.session, rsvp_id)

    async def find(self, meeting_id: str, *, search: str = "", statuses: Sequence[str] = (),
                   limit: int = 1000, offset: int = 0) -> list[Row]:
        async with self.uows.begin() as uow:
            return await queries.list_rsvps(uow.session, meeting_id, search=search, statuses=statuses, limit=limit,
                                            offset=offset)

    async def counts(self, meeting_id: str) -> dict[str, int]:
        """Going, waitlisted, cancelled, attended and (once the meeting is over) no-shows."""
        async with self.uows.begin() as uow:
            return await queries.count_rsvps(uow.session, meeting_id)
