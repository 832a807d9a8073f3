"""The events service's use cases: each is one transaction that writes state and its outbox rows together.

Places are handed out under a row lock on the meeting (SELECT … FOR UPDATE), so simultaneous RSVPs
queue on that one row and the counters `going_count` / `waitlist_last` can never overshoot.
"""

from __future__ import annotations

import asyncio
import hmac
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.events import db as tables
from services.events.domain import (
    CheckInRefused,
    InvalidMeeting,
    MeetingPlan,
    RsvpForm,
    RsvpRefused,
    Speaker,
    changed_fields,
    new_check_in_code,
    normalise_code,
    person_ref,
    place_for,
    reminder_due_times,
    rsvp_closed_reason,
    validate_meeting,
)
from shared import topics
from shared.auth import OrganiserScope
from shared.crypto import KeyStore, encode_key, seal
from shared.db import Database
from shared.events import catalog as ev
from shared.events.envelope import EventData
from shared.logging import correlation_id_var, get_logger
from shared.outbox import Outbox

log = get_logger(__name__)
OWNER = "events"
SELF_CHECK_IN_OPENS = timedelta(hours=1)  # before the start
SELF_CHECK_IN_CLOSES = timedelta(hours=1)  # after the end


class MeetingNotFound(LookupError):
    """No meeting with that id."""


class RsvpNotFound(LookupError):
    """No RSVP with that id (for that meeting)."""


class NotYourMeeting(PermissionError):
    """The organiser's scope does not cover the meeting."""


@dataclass(frozen=True)
class RsvpOutcome:
    rsvp_id: str
    status: str
    waitlist_position: int | None
    already: bool = False


def utcnow() -> datetime:
    return datetime.now(UTC)


def _plan_of(row: Any) -> MeetingPlan:
    return MeetingPlan(
        title=row.title,
        description=row.description,
        kind=row.kind,
        scope_type=row.scope_type,
        scope_id=row.scope_id,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        timezone=row.timezone,
        venue=row.venue,
        online_url=row.online_url,
        capacity=row.capacity,
        rsvp_deadline=row.rsvp_deadline,
        campaign_id=row.campaign_id,
        parent_meeting_id=row.parent_meeting_id,
        speakers=[Speaker(**s) for s in row.speakers or []],
        reminder_offsets=list(row.reminder_offsets or []),
    )


class EventsService:
    def __init__(self, db: Database, outbox: Outbox, *, secret_key: str, public_base_url: str) -> None:
        self.db = db
        self.outbox = outbox
        self.keys = KeyStore(tables.subject_keys, OWNER)
        self.secret_key = secret_key
        self.public_base_url = public_base_url.rstrip("/")
        self.reminders_changed = asyncio.Event()
        # RSVPs to one meeting queue here, in this process, before taking a database connection: they would
        # otherwise each hold a pooled connection while waiting for the meeting's row lock, and a surge of
        # RSVPs to one meeting would leave no connection for anything else (the row lock still orders
        # RSVPs across processes).
        self._rsvp_queues: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def public_url(self, meeting_id: str) -> str:
        return f"{self.public_base_url}/events/{meeting_id}"

    async def _emit(self, session: AsyncSession, events: Sequence[EventData]) -> None:
        await self.outbox.add_events(session, events, correlation_id=correlation_id_var.get())

    # members read model --------------------------------------------------------------------------
    async def member_joined(self, session: AsyncSession, event: ev.MemberJoined) -> None:
        m = tables.members
        values = {"region_id": event.region_id, "group_ids": event.group_ids, "subteam_ids": event.subteam_ids,
                  "status": "active", "updated_at": utcnow()}
        await session.execute(
            pg_insert(m).values(member_id=event.member_id, **values)
            .on_conflict_do_update(index_elements=[m.c.member_id], set_=values)
        )
        # Membership marks a join that came from an RSVP form with source "rsvp:<rsvp id>": link the RSVP.
        if event.source.startswith("rsvp:"):
            r = tables.rsvps
            await session.execute(
                update(r).where(r.c.id == event.source[5:], r.c.member_id.is_(None)).values(member_id=event.member_id)
            )

    async def member_profile_updated(self, session: AsyncSession, event: ev.MemberProfileUpdated) -> None:
        m = tables.members
        values: dict[str, Any] = {"updated_at": utcnow()}
        if "region_id" in event.changed or "region" in event.changed:
            values["region_id"] = event.region_id
        if "group_ids" in event.changed or "groups" in event.changed:
            values["group_ids"] = event.group_ids
        if "subteam_ids" in event.changed or "subteams" in event.changed:
            values["subteam_ids"] = event.subteam_ids
        await session.execute(update(m).where(m.c.member_id == event.member_id).values(**values))

    async def member_left(self, session: AsyncSession, event: ev.MemberLeft) -> None:
        m = tables.members
        await session.execute(
            update(m).where(m.c.member_id == event.member_id).values(status="left", updated_at=utcnow())
        )

    async def member_erased(self, session: AsyncSession, event: ev.MemberErased) -> None:
        """Forget the member: their read-model row, their name and email on RSVPs, and the keys that sealed them.

        RSVP rows stay (anonymised) so places and waitlist positions still add up.
        """
        await session.execute(delete(tables.members).where(tables.members.c.member_id == event.member_id))
        r = tables.rsvps
        erased = (
            await session.execute(
                update(r)
                .where(r.c.member_id == event.member_id)
                .values(member_id=None, name=None, email=None, person_ref=func.concat("erased:", r.c.id),
                        updated_at=utcnow())
                .returning(r.c.id)
            )
        ).scalars().all()
        await self.keys.shred(session, erased, self.outbox, topics.EVENTS_SUBJECT_KEYS)

    async def unit_defined(self, session: AsyncSession, event: ev.OrganisationUnitDefined) -> None:
        u = tables.units
        values = {"kind": event.kind, "name": event.name, "parent_id": event.parent_id, "slug": event.slug}
        await session.execute(
            pg_insert(u).values(unit_id=event.unit_id, **values)
            .on_conflict_do_update(index_elements=[u.c.unit_id], set_=values)
        )

    async def _region_and_parent(self, session: AsyncSession, scope_type: str,
                                 scope_id: str | None) -> tuple[str | None, str | None]:
        """The region a scope lies in, and its parent unit, from membership's organisation events."""
        if scope_type == "network" or scope_id is None:
            return None, None
        if scope_type == "region":
            return scope_id, None
        u = tables.units
        parent = (await session.execute(select(u.c.parent_id).where(u.c.unit_id == scope_id))).scalar()
        if scope_type == "group" or parent is None:
            return parent, parent
        grandparent = (await session.execute(select(u.c.parent_id).where(u.c.unit_id == parent))).scalar()
        return grandparent, parent

    # scheduling ----------------------------------------------------------------------------------
    def _meeting_event(self, row: Any, cls: type[ev.MeetingScheduled], **extra: Any) -> ev.MeetingScheduled:
        return cls(
            meeting_id=row.id,
            title=row.title,
            description=row.description,
            kind=row.kind,
            scope_type=row.scope_type,
            scope_id=row.scope_id,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            timezone=row.timezone,
            venue=row.venue,
            capacity=row.capacity,
            rsvp_deadline=row.rsvp_deadline,
            campaign_id=row.campaign_id,
            parent_meeting_id=row.parent_meeting_id,
            speakers=[ev.Speaker(**s) for s in row.speakers or []],
            public_url=self.public_url(row.id),
            sequence=row.sequence,
            **extra,
        )

    async def _check_scope(self, session: AsyncSession, organiser: OrganiserScope | None,
                           scope_type: str, scope_id: str | None) -> str | None:
        region_id, parent_id = await self._region_and_parent(session, scope_type, scope_id)
        ancestors = (parent_id,) if parent_id else ()
        if organiser is not None and not organiser.covers(scope_type, scope_id, region_id, ancestors=ancestors):
            raise NotYourMeeting(
                f"You organise the {organiser.scope_type} {organiser.scope_id or ''}; "
                f"this meeting is for the {scope_type} {scope_id or ''}".replace("  ", " ")
            )
        return region_id

    async def schedule(self, raw: dict[str, Any], organiser: OrganiserScope | None) -> str:
        """Validate and store a new meeting with its reminders; announce it with MeetingScheduled."""
        plan = validate_meeting(raw, now=utcnow())
        meeting_id = str(uuid.uuid4())
        m = tables.meetings
        async with self.db.transaction() as session:
            region_id = await self._check_scope(session, organiser, plan.scope_type, plan.scope_id)
            if plan.parent_meeting_id is not None:
                parent = (await session.execute(select(m.c.id).where(m.c.id == plan.parent_meeting_id))).first()
                if parent is None:
                    raise InvalidMeeting({"parent_meeting_id": "There is no conference with that id"})
            row = (
                await session.execute(
                    pg_insert(m)
                    .values(id=meeting_id, region_id=region_id, check_in_code=new_check_in_code(),
                            created_by=organiser.organiser_id if organiser else None, **plan.as_row())
                    .returning(*m.c)
                )
            ).one()
            await self._plan_reminders(session, row)
            await self._emit(session, [self._meeting_event(row, ev.MeetingScheduled)])
        self.reminders_changed.set()
        return meeting_id

    async def _plan_reminders(self, session: AsyncSession, row: Any) -> None:
        """Replace the pending reminders of a meeting; one already published is never sent again."""
        r = tables.reminders
        await session.execute(delete(r).where(r.c.meeting_id == row.id, r.c.status == "pending"))
        due = reminder_due_times(row.starts_at, list(row.reminder_offsets), utcnow())
        if due:
            await session.execute(
                pg_insert(r)
                .values([{"id": str(uuid.uuid4()), "meeting_id": row.id, "minutes_before": o, "due_at": d}
                         for o, d in due])
                .on_conflict_do_nothing(constraint="uq_reminders_meeting_offset")
            )

    async def _locked_meeting(self, session: AsyncSession, meeting_id: str) -> Row:
        m = tables.meetings
        row = (await session.execute(select(m).where(m.c.id == meeting_id).with_for_update())).first()
        if row is None:
            raise MeetingNotFound(meeting_id)
        return row

    async def update(self, meeting_id: str, raw: dict[str, Any], organiser: OrganiserScope | None) -> list[str]:
        """Change a meeting; publish MeetingUpdated with SEQUENCE raised. Returns the changed fields."""
        m = tables.meetings
        async with self.db.transaction() as session:
            row = await self._locked_meeting(session, meeting_id)
            await self._check_scope(session, organiser, row.scope_type, row.scope_id)
            if row.status == "cancelled":
                raise InvalidMeeting({"status": "This meeting has been cancelled and cannot be changed"})
            raw = {k: v for k, v in raw.items() if k not in ("scope_type", "scope_id", "parent_meeting_id")}
            before = _plan_of(row)
            after = validate_meeting(raw, now=utcnow(), existing=before)
            changed = changed_fields(before, after)
            if not changed:
                return []
            values = {k: v for k, v in after.as_row().items() if k in changed}
            new = (
                await session.execute(
                    update(m).where(m.c.id == meeting_id)
                    .values(**values, sequence=m.c.sequence + 1, updated_at=utcnow())
                    .returning(*m.c)
                )
            ).one()
            if "starts_at" in changed or "reminder_offsets" in changed:
                await self._plan_reminders(session, new)
            events: list[EventData] = [self._meeting_event(new, ev.MeetingUpdated, changed=changed)]
            if "capacity" in changed:
                events += await self._promote(session, new)
            await self._emit(session, events)
        self.reminders_changed.set()
        return changed

    async def cancel(self, meeting_id: str, reason: str | None, organiser: OrganiserScope | None) -> bool:
        """Cancel a meeting (idempotent): no more RSVPs or reminders; MeetingCancelled with SEQUENCE raised."""
        m, r = tables.meetings, tables.reminders
        async with self.db.transaction() as session:
            row = await self._locked_meeting(session, meeting_id)
            await self._check_scope(session, organiser, row.scope_type, row.scope_id)
            if row.status == "cancelled":
                return False
            reason = " ".join((reason or "").split())[:1000] or None
            new = (
                await session.execute(
                    update(m).where(m.c.id == meeting_id)
                    .values(status="cancelled", cancelled_at=utcnow(), cancel_reason=reason,
                            sequence=m.c.sequence + 1, updated_at=utcnow())
                    .returning(m.c.sequence)
                )
            ).one()
            await session.execute(
                update(r).where(r.c.meeting_id == meeting_id, r.c.status == "pending").values(status="cancelled")
            )
            await self._emit(session, [ev.MeetingCancelled(meeting_id=meeting_id, reason=reason,
                                                            sequence=new.sequence)])
        return True

    # RSVPs ---------------------------------------------------------------------------------------
    async def rsvp(self, meeting_id: str, form: RsvpForm, *, source: str = "form") -> RsvpOutcome:
        """Give the person a place if their party fits and nobody waits before them; otherwise the waitlist."""
        m, r = tables.meetings, tables.rsvps
        now = utcnow()
        ref = person_ref(member_id=form.member_id, email=form.email, secret_key=self.secret_key)
        queue = self._rsvp_queues.get(meeting_id)
        if queue is None:
            queue = self._rsvp_queues[meeting_id] = asyncio.Lock()
        async with queue, self.db.transaction() as session:
            meeting = await self._locked_meeting(session, meeting_id)
            reason = rsvp_closed_reason(status=meeting.status, starts_at=meeting.starts_at,
                                        ends_at=meeting.ends_at, rsvp_deadline=meeting.rsvp_deadline, now=now)
            if reason:
                raise RsvpRefused(reason)
            existing = (
                await session.execute(select(r).where(r.c.meeting_id == meeting_id, r.c.person_ref == ref))
            ).first()
            if existing is not None and existing.status != "cancelled":
                return RsvpOutcome(existing.id, existing.status, existing.waitlist_position, already=True)
            party = 1 + form.guests
            someone_waiting = (
                await session.execute(
                    select(r.c.id).where(r.c.meeting_id == meeting_id, r.c.status == "waitlisted").limit(1)
                )
            ).first() is not None
            status = "waitlisted" if someone_waiting else place_for(
                capacity=meeting.capacity, going=meeting.going_count, party=party)
            position = meeting.waitlist_last + 1 if status == "waitlisted" else None
            await session.execute(
                update(m).where(m.c.id == meeting_id).values(
                    going_count=m.c.going_count + (party if status == "going" else 0),
                    waitlist_last=position if position is not None else m.c.waitlist_last,
                )
            )
            rsvp_id = existing.id if existing is not None else str(uuid.uuid4())
            values = {"member_id": form.member_id, "name": form.name, "email": form.email, "status": status,
                      "waitlist_position": position, "guests": form.guests, "join_network": form.join_network,
                      "source": source, "updated_at": now, "cancelled_at": None}
            if existing is None:
                await session.execute(pg_insert(r).values(id=rsvp_id, meeting_id=meeting_id, person_ref=ref,
                                                          created_at=now, **values))
            else:
                await session.execute(update(r).where(r.c.id == rsvp_id).values(**values))
            await self._emit(session, await self._rsvp_events(session, meeting_id, rsvp_id, form, status, position))
        return RsvpOutcome(rsvp_id, status, position)

    async def _rsvp_events(self, session: AsyncSession, meeting_id: str, rsvp_id: str, form: RsvpForm,
                           status: str, position: int | None) -> list[EventData]:
        """RsvpReceived; personal fields sealed with the RSVP's own key, issued first on events.subject-keys."""
        events: list[EventData] = []
        sealed: dict[str, Any] = {}
        if form.email or form.name:
            key, created = await self.keys.get_or_create(session, rsvp_id)
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

    async def cancel_rsvp(self, rsvp_id: str) -> list[str]:
        """Cancel an RSVP (idempotent); a freed place goes to the first on the waitlist. Returns who was promoted."""
        m, r = tables.meetings, tables.rsvps
        async with self.db.transaction() as session:
            meeting_id = (await session.execute(select(r.c.meeting_id).where(r.c.id == rsvp_id))).scalar()
            if meeting_id is None:
                raise RsvpNotFound(rsvp_id)
            await self._locked_meeting(session, meeting_id)  # lock order: the meeting, then its RSVPs
            rsvp = (await session.execute(select(r).where(r.c.id == rsvp_id).with_for_update())).one()
            if rsvp.status == "cancelled":
                return []
            await session.execute(
                update(r).where(r.c.id == rsvp_id)
                .values(status="cancelled", waitlist_position=None, cancelled_at=utcnow(), updated_at=utcnow())
            )
            events: list[EventData] = [ev.RsvpCancelled(meeting_id=meeting_id, rsvp_id=rsvp_id,
                                                        member_id=rsvp.member_id)]
            if rsvp.status == "going":
                meeting = (
                    await session.execute(
                        update(m).where(m.c.id == meeting_id)
                        .values(going_count=m.c.going_count - (1 + rsvp.guests)).returning(*m.c)
                    )
                ).one()
                events += await self._promote(session, meeting)
            await self._emit(session, events)
        return [e.rsvp_id for e in events if isinstance(e, ev.PromotedFromWaitlist)]

    async def _promote(self, session: AsyncSession, meeting: Any) -> list[EventData]:
        """Give freed places to the waitlist in order; stop at the first party that does not fit."""
        if meeting.status != "scheduled":
            return []
        m, r = tables.meetings, tables.rsvps
        going = meeting.going_count
        events: list[EventData] = []
        waiting = (
            await session.execute(
                select(r).where(r.c.meeting_id == meeting.id, r.c.status == "waitlisted")
                .order_by(r.c.waitlist_position).with_for_update()
            )
        ).all()
        for rsvp in waiting:
            party = 1 + rsvp.guests
            if place_for(capacity=meeting.capacity, going=going, party=party) != "going":
                break
            going += party
            await session.execute(
                update(r).where(r.c.id == rsvp.id).values(status="going", waitlist_position=None, updated_at=utcnow())
            )
            events.append(ev.PromotedFromWaitlist(meeting_id=meeting.id, rsvp_id=rsvp.id, member_id=rsvp.member_id))
        if going != meeting.going_count:
            await session.execute(update(m).where(m.c.id == meeting.id).values(going_count=going))
        return events

    # reminders -----------------------------------------------------------------------------------
    async def publish_due_reminders(self, limit: int = 100) -> int:
        """Publish each due reminder once: claimed with SKIP LOCKED, marked published in the same transaction."""
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT r.id, r.meeting_id, r.minutes_before, m.starts_at FROM reminders r "
                        "JOIN meetings m ON m.id = r.meeting_id "
                        "WHERE r.status = 'pending' AND r.due_at <= now() AND m.status = 'scheduled' "
                        "ORDER BY r.due_at LIMIT :n FOR UPDATE OF r SKIP LOCKED"
                    ),
                    {"n": limit},
                )
            ).all()
            if not rows:
                return 0
            await self._emit(session, [
                ev.MeetingReminderDue(meeting_id=row.meeting_id, reminder_id=row.id,
                                      minutes_before=row.minutes_before, starts_at=row.starts_at)
                for row in rows
            ])
            r = tables.reminders
            await session.execute(
                update(r).where(r.c.id.in_([row.id for row in rows])).values(status="published", published_at=utcnow())
            )
        return len(rows)

    async def next_reminder_due(self) -> datetime | None:
        r = tables.reminders
        async with self.db.transaction() as session:
            return (await session.execute(select(func.min(r.c.due_at)).where(r.c.status == "pending"))).scalar()

    # attendance ----------------------------------------------------------------------------------
    async def record_attendance(self, meeting_id: str, rsvp_id: str, method: str = "organiser",
                                organiser: OrganiserScope | None = None) -> bool:
        """Mark someone as there (idempotent): AttendanceRecorded the first time only."""
        r = tables.rsvps
        async with self.db.transaction() as session:
            meeting = await self._locked_meeting(session, meeting_id)
            await self._check_scope(session, organiser, meeting.scope_type, meeting.scope_id)
            query = select(r).where(r.c.id == rsvp_id, r.c.meeting_id == meeting_id).with_for_update()
            rsvp = (await session.execute(query)).first()
            if rsvp is None:
                raise RsvpNotFound(rsvp_id)
            return await self._mark_attended(session, meeting, rsvp, method)

    async def _mark_attended(self, session: AsyncSession, meeting: Any, rsvp: Any, method: str) -> bool:
        if meeting.status == "cancelled":
            raise CheckInRefused("This meeting was cancelled")
        if rsvp.attended_at is not None:
            return False
        r, m = tables.rsvps, tables.meetings
        now = utcnow()
        events: list[EventData] = []
        if rsvp.status == "waitlisted":
            # Someone from the waitlist who came anyway has a place now: it counts, and they leave the waitlist.
            await session.execute(update(r).where(r.c.id == rsvp.id).values(status="going", waitlist_position=None))
            await session.execute(
                update(m).where(m.c.id == meeting.id).values(going_count=m.c.going_count + 1 + rsvp.guests)
            )
            events.append(ev.PromotedFromWaitlist(meeting_id=meeting.id, rsvp_id=rsvp.id, member_id=rsvp.member_id))
        await session.execute(
            update(r).where(r.c.id == rsvp.id).values(attended_at=now, attendance_method=method, updated_at=now)
        )
        await self._emit(session, [*events, ev.AttendanceRecorded(meeting_id=meeting.id, rsvp_id=rsvp.id,
                                                         member_id=rsvp.member_id, method=method,  # type: ignore[arg-type]
                                                         attended_at=now)])
        return True

    async def walk_in(self, meeting_id: str, form: RsvpForm, organiser: OrganiserScope | None,
                      method: str = "walk_in", source: str = "walk_in") -> str:
        """Someone turned up: their existing RSVP is marked, or a new one (a place, whatever the capacity) made."""
        m, r = tables.meetings, tables.rsvps
        now = utcnow()
        ref = person_ref(member_id=form.member_id, email=form.email, secret_key=self.secret_key)
        async with self.db.transaction() as session:
            meeting = await self._locked_meeting(session, meeting_id)
            await self._check_scope(session, organiser, meeting.scope_type, meeting.scope_id)
            if meeting.status == "cancelled":
                raise CheckInRefused("This meeting was cancelled")
            existing = (
                await session.execute(select(r).where(r.c.meeting_id == meeting_id, r.c.person_ref == ref))
            ).first()
            if existing is not None and existing.status != "cancelled":
                await self._mark_attended(session, meeting, existing, "organiser" if method == "walk_in" else method)
                return existing.id
            rsvp_id = existing.id if existing is not None else str(uuid.uuid4())
            values = {"member_id": form.member_id, "name": form.name, "email": form.email, "status": "going",
                      "waitlist_position": None, "guests": form.guests, "join_network": form.join_network,
                      "source": source, "updated_at": now, "cancelled_at": None,
                      "attended_at": None}
            if existing is None:
                await session.execute(pg_insert(r).values(id=rsvp_id, meeting_id=meeting_id, person_ref=ref,
                                                          created_at=now, **values))
            else:
                await session.execute(update(r).where(r.c.id == rsvp_id).values(**values))
            await session.execute(
                update(m).where(m.c.id == meeting_id).values(going_count=m.c.going_count + 1 + form.guests)
            )
            await self._emit(session, await self._rsvp_events(session, meeting_id, rsvp_id, form, "going", None))
            rsvp = (await session.execute(select(r).where(r.c.id == rsvp_id))).one()
            await self._mark_attended(session, meeting, rsvp, method)
        return rsvp_id

    async def self_check_in(self, meeting_id: str, code: str, email: str, member_id: str | None = None) -> str:
        """Check in with the code shown at the venue; the person is found by their RSVP's email (or member link)."""
        r = tables.rsvps
        now = utcnow()
        async with self.db.transaction() as session:
            meeting = await self._locked_meeting(session, meeting_id)
            if meeting.status == "cancelled":
                raise CheckInRefused("This meeting was cancelled.")
            if now < meeting.starts_at - SELF_CHECK_IN_OPENS:
                raise CheckInRefused("Check-in opens an hour before the meeting starts.")
            if now > meeting.ends_at + SELF_CHECK_IN_CLOSES:
                raise CheckInRefused("Check-in for this meeting has closed.")
            if not hmac.compare_digest(normalise_code(code), meeting.check_in_code):
                raise CheckInRefused("That code does not match the one shown at the venue. Check it and try again.")
            refs = [person_ref(member_id=None, email=email, secret_key=self.secret_key)]
            if member_id:
                refs.append(person_ref(member_id=member_id, email=None, secret_key=self.secret_key))
            rsvp = (
                await session.execute(
                    select(r).where(r.c.meeting_id == meeting_id, r.c.person_ref.in_(refs),
                                    r.c.status != "cancelled").with_for_update()
                )
            ).first()
            if rsvp is None:
                raise CheckInRefused(
                    "We cannot find an RSVP with that email address. Ask an organiser to add you at the door."
                )
            await self._mark_attended(session, meeting, rsvp, "self_check_in")
            return rsvp.id

    # queries -------------------------------------------------------------------------------------
    async def get_meeting(self, meeting_id: str) -> Row:
        m = tables.meetings
        async with self.db.transaction() as session:
            row = (await session.execute(select(m).where(m.c.id == meeting_id))).first()
        if row is None:
            raise MeetingNotFound(meeting_id)
        return row

    async def list_meetings(
        self,
        *,
        region_id: str | None = None,
        group_id: str | None = None,
        kind: str | None = None,
        on_or_after: date | None = None,
        before: date | None = None,
        scope_type: str | None = None,
        scope_id: str | None = None,
        include_cancelled: bool = False,
        upcoming_only: bool = True,
        limit: int = 200,
        offset: int = 0,
    ) -> list[Row]:
        """Meetings in start order, filtered as the public listing and the feeds ask."""
        m = tables.meetings
        q = select(m)
        if not include_cancelled:
            q = q.where(m.c.status == "scheduled")
        if upcoming_only and on_or_after is None:
            q = q.where(m.c.ends_at >= utcnow())
        if on_or_after is not None:
            q = q.where(m.c.starts_at >= datetime.combine(on_or_after, time.min, UTC))
        if before is not None:
            q = q.where(m.c.starts_at < datetime.combine(before, time.min, UTC))
        if kind:
            q = q.where(m.c.kind == kind)
        if region_id:
            # The region's own meetings, its groups' and sub-teams', and network-wide ones.
            q = q.where(or_(m.c.region_id == region_id, m.c.scope_type == "network"))
        if group_id:
            q = q.where(or_(and_(m.c.scope_type == "group", m.c.scope_id == group_id), m.c.scope_type == "network"))
        if scope_type:
            q = q.where(m.c.scope_type == scope_type)
            if scope_id:
                q = q.where(m.c.scope_id == scope_id)
        q = q.order_by(m.c.starts_at, m.c.id).limit(limit).offset(offset)
        async with self.db.transaction() as session:
            return list((await session.execute(q)).all())

    async def count_meetings(self) -> int:
        async with self.db.transaction() as session:
            return int((await session.execute(select(func.count()).select_from(tables.meetings))).scalar_one())

    async def units(self) -> list[Row]:
        u = tables.units
        async with self.db.transaction() as session:
            return list((await session.execute(select(u).order_by(u.c.kind, u.c.name))).all())

    async def get_rsvp(self, rsvp_id: str) -> Row:
        r = tables.rsvps
        async with self.db.transaction() as session:
            row = (await session.execute(select(r).where(r.c.id == rsvp_id))).first()
        if row is None:
            raise RsvpNotFound(rsvp_id)
        return row

    async def list_rsvps(self, meeting_id: str, *, search: str = "", statuses: Sequence[str] = (),
                         limit: int = 1000, offset: int = 0) -> list[Row]:
        r = tables.rsvps
        q = select(r).where(r.c.meeting_id == meeting_id)
        if statuses:
            q = q.where(r.c.status.in_(list(statuses)))
        if search.strip():
            like = f"%{search.strip().lower()}%"
            q = q.where(or_(func.lower(r.c.name).like(like), func.lower(r.c.email).like(like)))
        q = q.order_by(r.c.status, r.c.waitlist_position.nulls_first(), func.lower(r.c.name), r.c.created_at)
        async with self.db.transaction() as session:
            return list((await session.execute(q.limit(limit).offset(offset))).all())

    async def count_rsvps(self, meeting_id: str) -> dict[str, int]:
        """Going, waitlisted, cancelled, attended and (once the meeting is over) no-shows."""
        r, m = tables.rsvps, tables.meetings
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    select(r.c.status, func.count(), func.count(r.c.attended_at))
                    .where(r.c.meeting_id == meeting_id).group_by(r.c.status)
                )
            ).all()
            ended = (await session.execute(select(m.c.ends_at <= func.now()).where(m.c.id == meeting_id))).scalar()
        counts = {"going": 0, "waitlisted": 0, "cancelled": 0, "attended": 0, "no_shows": 0}
        for status, n, attended in rows:
            counts[status] = n
            counts["attended"] += attended
            if status == "going" and ended:
                counts["no_shows"] = n - attended
        counts["total"] = counts["going"] + counts["waitlisted"] + counts["cancelled"]
        return counts


class ReminderLoop:
    """Background task: publishes reminders as they fall due; sleeps until the next one or the poll interval."""

    def __init__(self, service: EventsService, poll_interval_s: float = 5.0) -> None:
        self.service = service
        self.poll_interval_s = poll_interval_s

    async def run(self) -> None:
        while True:
            try:
                while await self.service.publish_due_reminders() > 0:
                    pass
                next_due = await self.service.next_reminder_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reminder pass failed; will retry", error=repr(exc))
                next_due = None
            wait = self.poll_interval_s
            if next_due is not None:
                wait = max(0.05, min(wait, (next_due - utcnow()).total_seconds()))
            self.service.reminders_changed.clear()
            try:
                await asyncio.wait_for(self.service.reminders_changed.wait(), timeout=wait)
            except TimeoutError:
                pass
