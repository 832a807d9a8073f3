"""Email about meetings: announcements to members in scope, RSVP confirmations with an .ics file,
waitlist promotions, reminders, changes and cancellations. Built from a local mirror of meetings and
RSVPs kept from the events service's events (never by asking it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, Timezone, TimezoneDaylight, TimezoneStandard
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications.domain import (
    audience_moves,
    changes_worth_an_email,
    first_name_of,
    is_announced,
    rsvp_email_wanted,
)
from services.notifications.service import NotificationService
from shared import tokens
from shared.events.catalog import (
    AttendanceRecorded,
    MeetingCancelled,
    MeetingReminderDue,
    MeetingScheduled,
    MeetingUpdated,
    PromotedFromWaitlist,
    RsvpCancelled,
    RsvpReceived,
    RsvpRepeated,
)
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork

RSVP_LINK_PURPOSE = "events-rsvp"  # the events service's own page of one RSVP (see docs/events.md)


class MeetingNotifications:
    def __init__(self, service: NotificationService) -> None:
        self.service = service
        self.settings = service.settings

    # meetings --------------------------------------------------------------------------------------
    async def meeting_scheduled(self, uow: UnitOfWork, envelope: Envelope, event: MeetingScheduled) -> None:
        """Mirror the meeting and start its announcement fan-out (run by AnnouncementFanOut)."""
        session = uow.session
        await self._mirror(session, event, status="scheduled")
        if is_announced(event.parent_meeting_id):
            await session.execute(
                pg_insert(tables.announcements)
                .values(meeting_id=event.meeting_id, correlation_id=envelope.correlation_id)
                .on_conflict_do_nothing()
            )
            uow.on_commit(self.service.announcements_queued.set)

    async def meeting_updated(self, uow: UnitOfWork, envelope: Envelope, event: MeetingUpdated) -> None:
        """Tell its attendees what changed; a meeting moved to another part of the network is announced again, to
        whoever is in its audience now: one announcement per member and meeting, so only those newly included
        get it."""
        session = uow.session
        await self._mirror(session, event, status="scheduled")
        if audience_moves(event.changed) and is_announced(event.parent_meeting_id):
            a = tables.announcements
            await session.execute(
                pg_insert(a)
                .values(meeting_id=event.meeting_id, correlation_id=envelope.correlation_id)
                .on_conflict_do_update(
                    index_elements=[a.c.meeting_id],
                    set_={"status": "pending", "cursor": None, "finished_at": None},
                    where=a.c.status != "cancelled",
                )
            )
            uow.on_commit(self.service.announcements_queued.set)
        changed = changes_worth_an_email(event.changed)
        if not changed:
            return
        meeting = await self._meeting(session, event.meeting_id)
        if meeting is None:
            return
        for rsvp in await self._people(session, event.meeting_id, ("going", "waitlisted")):
            await self._queue_for_rsvp(
                uow,
                envelope,
                rsvp,
                kind="meeting_changed",
                subject_ref=f"{event.meeting_id}:{event.sequence}",
                subject=f"Changed: {meeting['title']}",
                template="meeting_changed",
                meeting=meeting,
                extra={"changed": changed},
            )

    async def meeting_cancelled(self, uow: UnitOfWork, envelope: Envelope, event: MeetingCancelled) -> None:
        session = uow.session
        m = tables.meetings
        await session.execute(
            update(m)
            .where(m.c.meeting_id == event.meeting_id)
            .values(status="cancelled", sequence=event.sequence, updated_at=datetime.now(UTC))
        )
        await session.execute(
            update(tables.announcements)
            .where(tables.announcements.c.meeting_id == event.meeting_id)
            .values(status="cancelled")
        )
        meeting = await self._meeting(session, event.meeting_id)
        if meeting is None:
            return
        for rsvp in await self._people(session, event.meeting_id, ("going", "waitlisted")):
            await self._queue_for_rsvp(
                uow,
                envelope,
                rsvp,
                kind="meeting_cancelled",
                subject_ref=event.meeting_id,
                subject=f"Cancelled: {meeting['title']}",
                template="meeting_cancelled",
                meeting=meeting,
                extra={"reason": event.reason or ""},
            )

    async def reminder_due(self, uow: UnitOfWork, envelope: Envelope, event: MeetingReminderDue) -> None:
        session = uow.session
        meeting = await self._meeting(session, event.meeting_id)
        if meeting is None or meeting["status"] == "cancelled":
            return
        for rsvp in await self._people(session, event.meeting_id, ("going",)):
            await self._queue_for_rsvp(
                uow,
                envelope,
                rsvp,
                kind="reminder",
                subject_ref=event.reminder_id,
                subject=f"Reminder: {meeting['title']} {when_phrase(event.minutes_before)}",
                template="reminder",
                meeting=meeting,
                extra={"soon": when_phrase(event.minutes_before)},
            )

    # RSVPs -----------------------------------------------------------------------------------------
    async def rsvp_received(self, uow: UnitOfWork, envelope: Envelope, event: RsvpReceived) -> None:
        session = uow.session
        contact = await self._contact(uow, envelope, event)
        if contact is None:
            return  # parked until the RSVP's key arrives (handled then, once), or its key was destroyed (erased)
        email, name = contact
        if email is None and event.member_id is None:
            return
        rv = tables.rsvps
        values = {
            "meeting_id": event.meeting_id,
            "member_id": event.member_id,
            "email": email,
            "name": name,
            "status": event.status,
            "updated_at": datetime.now(UTC),
        }
        await session.execute(
            pg_insert(rv)
            .values(rsvp_id=event.rsvp_id, **values)
            .on_conflict_do_update(index_elements=[rv.c.rsvp_id], set_=values)
        )
        if event.member_id:
            await self.took_part(session, event.member_id, envelope.occurred_at)
        meeting = await self._meeting(session, event.meeting_id)
        if meeting is None:
            return
        rsvp = await self._rsvp(session, event.rsvp_id)
        going = event.status == "going"
        await self._queue_for_rsvp(
            uow,
            envelope,
            rsvp,
            kind="rsvp_confirmation" if going else "rsvp_waitlisted",
            subject_ref=event.rsvp_id,
            subject=(f"You're going: {meeting['title']}" if going else f"You're on the waitlist: {meeting['title']}"),
            template="rsvp_confirmation" if going else "rsvp_waitlisted",
            meeting=meeting,
            extra={"position": event.waitlist_position},
        )

    async def _rsvp_when_ready(self, uow: UnitOfWork, envelope: Envelope, rsvp_id: str) -> dict[str, Any] | None:
        """The RSVP's mirror row for an event about it. When the row is not there yet, its RsvpReceived waits for
        the RSVP's key: this event is parked behind it (or dropped, the key destroyed). Once the key is known to be
        here the row is read again: the keys consumer may have released that RsvpReceived, and written the row,
        while `key_ready` waited for the subject's lock (the row read before it was from before that commit)."""
        rsvp = await self._rsvp(uow.session, rsvp_id)
        if rsvp is None and await self.service.key_ready(uow, envelope, rsvp_id):
            rsvp = await self._rsvp(uow.session, rsvp_id)
        return rsvp

    async def rsvp_repeated(self, uow: UnitOfWork, envelope: Envelope, event: RsvpRepeated) -> None:
        """Someone RSVPed again with the address of an RSVP that stands: that address (only) gets its link again."""
        session = uow.session
        rsvp = await self._rsvp_when_ready(uow, envelope, event.rsvp_id)
        if rsvp is None:
            return
        meeting = await self._meeting(session, event.meeting_id)
        if meeting is None:
            return
        await self._queue_for_rsvp(
            uow,
            envelope,
            rsvp,
            kind="rsvp_repeat",
            subject_ref=str(envelope.event_id),  # each repeat is told (the per-address rate limit bounds them)
            subject=f"Your RSVP: {meeting['title']}",
            template="rsvp_repeat",
            meeting=meeting,
            extra={"status": rsvp["status"]},
        )

    async def promoted(self, uow: UnitOfWork, envelope: Envelope, event: PromotedFromWaitlist) -> None:
        session = uow.session
        rsvp = await self._rsvp_when_ready(uow, envelope, event.rsvp_id)
        if rsvp is None:
            return
        await session.execute(
            update(tables.rsvps).where(tables.rsvps.c.rsvp_id == event.rsvp_id).values(status="going")
        )
        meeting = await self._meeting(session, event.meeting_id)
        if meeting is None:
            return
        await self._queue_for_rsvp(
            uow,
            envelope,
            {**rsvp, "status": "going"},
            kind="rsvp_promoted",
            subject_ref=event.rsvp_id,
            subject=f"A place came up: you're going to {meeting['title']}",
            template="rsvp_promoted",
            meeting=meeting,
        )

    async def _waits_behind_parked(self, uow: UnitOfWork, envelope: Envelope, rsvp_id: str) -> bool:
        """Whether an event that changes the RSVP's mirror row was parked behind its RsvpReceived (itself parked
        until the RSVP's key arrives), so that the change is not made to a row that is not there yet."""
        session = uow.session
        if await self._rsvp(session, rsvp_id) is not None:
            return False
        await self.service.parking.lock_subjects(session, [rsvp_id])  # not while the keys consumer releases it
        if await self._rsvp(session, rsvp_id) is None and await self.service.parking.has_parked(session, rsvp_id):
            await self.service.parking.park(session, envelope, "rsvp not mirrored yet", waits_for=rsvp_id)
            return True
        return False

    async def rsvp_cancelled(self, uow: UnitOfWork, envelope: Envelope, event: RsvpCancelled) -> None:
        session = uow.session
        if await self._waits_behind_parked(uow, envelope, event.rsvp_id):
            return
        await session.execute(
            update(tables.rsvps).where(tables.rsvps.c.rsvp_id == event.rsvp_id).values(status="cancelled")
        )

    async def attendance(self, uow: UnitOfWork, envelope: Envelope, event: AttendanceRecorded) -> None:
        session = uow.session
        if await self._waits_behind_parked(uow, envelope, event.rsvp_id):
            return
        await session.execute(
            update(tables.rsvps).where(tables.rsvps.c.rsvp_id == event.rsvp_id).values(status="attended")
        )
        if event.member_id:
            await self.took_part(session, event.member_id, event.attended_at)

    async def took_part(self, session: AsyncSession, member_id: str, at: datetime) -> None:
        """Record that a member took part (follow-up sequences skip them)."""
        p = tables.participation
        await session.execute(
            pg_insert(p)
            .values(member_id=member_id, first_at=at, last_at=at, count=1)
            .on_conflict_do_update(
                index_elements=[p.c.member_id],
                set_={"last_at": func.greatest(p.c.last_at, at), "count": p.c.count + 1},
            )
        )

    # calendar attachment ---------------------------------------------------------------------------
    async def ics_for_delivery(self, session: AsyncSession, row: Any) -> list[tuple[str, str, bytes]]:
        """The meeting's .ics, attached to RSVP emails (cancelled ones carry STATUS:CANCELLED)."""
        meeting_id = await self._meeting_id_of(session, row)
        meeting = await self._meeting(session, meeting_id) if meeting_id else None
        if meeting is None:
            return []
        method = "CANCEL" if meeting["status"] == "cancelled" else "PUBLISH"
        return [
            ("meeting.ics", "text/calendar", ics_bytes(meeting, base_url=self.settings.public_base_url, method=method))
        ]

    async def _meeting_id_of(self, session: AsyncSession, row: Any) -> str | None:
        if row.kind in ("meeting_cancelled",):
            return row.subject_ref
        if row.kind == "meeting_changed":
            return row.subject_ref.split(":", 1)[0]
        rsvp = await self._rsvp(session, row.subject_ref)
        return rsvp["meeting_id"] if rsvp else None

    # internals -------------------------------------------------------------------------------------
    async def _contact(
        self, uow: UnitOfWork, envelope: Envelope, event: RsvpReceived
    ) -> tuple[str | None, str | None] | None:
        """The RSVP's address and name; None when the event waits for the RSVP's key (parked, so that it is
        handled once, whole, when the key arrives: a member's RSVP stored without its address meanwhile was counted
        as participation twice and let a repeat's notice find a row with no address to write to)."""
        session = uow.session
        if event.email is not None:
            if not await self.service.key_ready(uow, envelope, event.rsvp_id):
                return None
            return await self.service.keys.unseal(session, event.email), await self.service.keys.unseal(
                session, event.name
            )
        if event.member_id:
            r = tables.recipients
            row = (await session.execute(select(r.c.email, r.c.name).where(r.c.member_id == event.member_id))).first()
            if row is not None:
                return row.email, row.name
        return None, None

    async def _mirror(self, session: AsyncSession, event: MeetingScheduled, *, status: str) -> None:
        m = tables.meetings
        values = {
            "title": event.title,
            "description": event.description,
            "kind": event.kind,
            "scope_type": event.scope_type,
            "scope_id": event.scope_id,
            "starts_at": event.starts_at,
            "ends_at": event.ends_at,
            "timezone": event.timezone,
            "venue": event.venue,
            "public_url": event.public_url,
            "sequence": event.sequence,
            "status": status,
            "updated_at": datetime.now(UTC),
        }
        await session.execute(
            pg_insert(m)
            .values(meeting_id=event.meeting_id, **values)
            .on_conflict_do_update(index_elements=[m.c.meeting_id], set_=values, where=m.c.sequence <= event.sequence)
        )

    async def _meeting(self, session: AsyncSession, meeting_id: str) -> dict[str, Any] | None:
        m = tables.meetings
        row = (await session.execute(select(m).where(m.c.meeting_id == meeting_id))).mappings().first()
        return dict(row) if row else None

    async def _rsvp(self, session: AsyncSession, rsvp_id: str) -> dict[str, Any] | None:
        rv = tables.rsvps
        row = (await session.execute(select(rv).where(rv.c.rsvp_id == rsvp_id))).mappings().first()
        return dict(row) if row else None

    async def _people(self, session: AsyncSession, meeting_id: str, statuses: tuple[str, ...]) -> list[dict[str, Any]]:
        rv = tables.rsvps
        rows = await session.execute(
            select(rv).where(rv.c.meeting_id == meeting_id, rv.c.status.in_(statuses)).order_by(rv.c.rsvp_id)
        )
        return [dict(r) for r in rows.mappings()]

    async def _queue_for_rsvp(
        self,
        uow: UnitOfWork,
        envelope: Envelope,
        rsvp: dict[str, Any] | None,
        *,
        kind: str,
        subject_ref: str,
        subject: str,
        template: str,
        meeting: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> None:
        if rsvp is None or not rsvp.get("email"):
            return
        if not rsvp_email_wanted(kind, meeting["ends_at"], envelope.occurred_at, datetime.now(UTC)):
            return
        secret, base = self.settings.secret_key, self.settings.public_base_url
        rsvp_url = f"{base.rstrip('/')}/events/rsvps/{tokens.sign(secret, RSVP_LINK_PURPOSE, {'r': rsvp['rsvp_id']})}"
        footer = self.service.footer(rsvp["member_id"]) if rsvp.get("member_id") else {}
        text_body, html_body = self.service.renderer.render(
            template,
            wording=await self.service.wording.current(uow.session),
            name=first_name_of(rsvp.get("name")),
            meeting=meeting,
            when=format_when(meeting),
            rsvp_url=rsvp_url,
            preferences_url=footer.get("preferences_url", ""),
            unsubscribe_url=footer.get("unsubscribe_url", ""),
            **(extra or {}),
        )
        await self.service.queue(
            uow,
            kind=kind,
            subject_ref=subject_ref,
            recipient_id=rsvp.get("member_id") or rsvp["rsvp_id"],
            recipient_email=rsvp["email"],
            subject=subject,
            body_text=text_body,
            body_html=html_body,
            correlation_id=envelope.correlation_id,
        )


def when_phrase(minutes_before: int) -> str:
    if minutes_before % 1440 == 0:
        days = minutes_before // 1440
        return "tomorrow" if days == 1 else f"in {days} days"
    if minutes_before % 60 == 0:
        hours = minutes_before // 60
        return "in an hour" if hours == 1 else f"in {hours} hours"
    return f"in {minutes_before} minutes"


def format_when(meeting: dict[str, Any]) -> str:
    tz = ZoneInfo(meeting["timezone"])
    start, end = meeting["starts_at"].astimezone(tz), meeting["ends_at"].astimezone(tz)
    return f"{start:%A %-d %B %Y, %H:%M}–{end:%H:%M} ({meeting['timezone']})"


def ics_bytes(meeting: dict[str, Any], *, base_url: str, method: str = "PUBLISH") -> bytes:
    """An RFC 5545 calendar with the meeting, its stable UID (the same as the events service's feeds),
    SEQUENCE, STATUS and the VTIMEZONE of Europe/London (or the meeting's zone)."""
    cal = Calendar()
    cal.add("prodid", "-//Groundswell//notifications//EN")
    cal.add("version", "2.0")
    cal.add("method", method)
    tzid = meeting["timezone"]
    cal.add_component(_vtimezone(tzid, meeting["starts_at"]))
    ev = Event()
    ev.add("uid", f"meeting-{meeting['meeting_id']}@{urlsplit(base_url).hostname or 'groundswell'}")
    ev.add("summary", meeting["title"])
    ev.add("dtstamp", datetime.now(UTC))
    tz = ZoneInfo(tzid)
    ev.add("dtstart", meeting["starts_at"].astimezone(tz))
    ev.add("dtend", meeting["ends_at"].astimezone(tz))
    ev.add("sequence", meeting["sequence"])
    ev.add("status", "CANCELLED" if meeting["status"] == "cancelled" else "CONFIRMED")
    if meeting.get("venue"):
        ev.add("location", meeting["venue"])
    ev.add("url", meeting["public_url"])
    if meeting.get("description"):
        ev.add("description", meeting["description"])
    cal.add_component(ev)
    return cal.to_ical()


def _vtimezone(tzid: str, around: datetime) -> Timezone:
    try:
        return Timezone.from_tzid(tzid)  # icalendar >= 6 builds it from the zoneinfo database
    except Exception:  # pragma: no cover - fallback for a zone the library cannot build
        tz = Timezone()
        tz.add("tzid", tzid)
        std = TimezoneStandard()
        std.add("dtstart", around.replace(tzinfo=None) - timedelta(days=365))
        std.add("tzoffsetfrom", timedelta(0))
        std.add("tzoffsetto", timedelta(0))
        tz.add_component(std)
        tz.add_component(TimezoneDaylight())
        return tz
