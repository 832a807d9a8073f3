"""Meetings: schedule, change and cancel them (announced with SEQUENCE raised each time), and read them back.

An organiser may only touch meetings inside the part of the network they organise; where a scope lies (its region
and parent unit) comes from membership's organisation events (members.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Unpack

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.events import queries
from services.events.domain import (
    InvalidMeeting,
    MeetingPlan,
    NotYourMeeting,
    Places,
    Speaker,
    cancel_reason,
    new_check_in_code,
    plan_change,
    scope_moves,
    validate_meeting,
)
from services.events.queries import MeetingFilters, utcnow
from services.events.reminders import Reminders
from services.events.rsvps import hand_out_freed_places
from shared.auth import OrganiserScope
from shared.events import catalog as ev
from shared.events.envelope import EventData
from shared.scope_picker import scope_label
from shared.uow import UnitsOfWork

ORGANISER_PAGE = 25  # meetings a page of the organisers' list


@dataclass(frozen=True)
class MeetingsPage:
    """A page of the organisers' list: the meetings still to come and those over (each with its RSVP counts)."""

    coming: list[Row]
    past: list[Row]
    counts: dict[str, dict[str, int]]
    for_whom: dict[str, str]  # who each meeting is for, in words
    has_next: bool


def plan_of(row: Any) -> MeetingPlan:
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


async def region_and_parent(session: AsyncSession, scope_type: str,
                            scope_id: str | None) -> tuple[str | None, str | None]:
    """The region a scope lies in, and its parent unit, from membership's organisation events."""
    if scope_type == "network" or scope_id is None:
        return None, None
    if scope_type == "region":
        return scope_id, None
    parent = await queries.parent_of(session, scope_id)
    if scope_type == "group" or parent is None:
        return parent, parent
    return await queries.parent_of(session, parent), parent


async def check_scope(session: AsyncSession, organiser: OrganiserScope | None, scope_type: str,
                      scope_id: str | None) -> str | None:
    """Refuse an organiser whose scope does not cover the meeting's (None: a trusted caller); the scope's region."""
    region_id, parent_id = await region_and_parent(session, scope_type, scope_id)
    ancestors = (parent_id,) if parent_id else ()
    if organiser is not None and not organiser.covers(scope_type, scope_id, region_id, ancestors=ancestors):
        raise NotYourMeeting(
            f"You organise the {organiser.scope_type} {organiser.scope_id or ''}; "
            f"this meeting is for the {scope_type} {scope_id or ''}".replace("  ", " ")
        )
    return region_id


async def covers(session: AsyncSession, organiser: OrganiserScope, scope_type: str, scope_id: str | None) -> bool:
    """Whether the organiser's (or API key's) scope covers a meeting scoped to (scope_type, scope_id)."""
    try:
        await check_scope(session, organiser, scope_type, scope_id)
    except NotYourMeeting:
        return False
    return True


class Meetings:
    def __init__(self, uows: UnitsOfWork, reminders: Reminders, *, public_base_url: str) -> None:
        self.uows = uows
        self.reminders = reminders
        self.public_base_url = public_base_url.rstrip("/")

    def public_url(self, meeting_id: str) -> str:
        return f"{self.public_base_url}/events/{meeting_id}"

    def _announced(self, row: Any, cls: type[ev.MeetingScheduled], **extra: Any) -> ev.MeetingScheduled:
        """MeetingScheduled or MeetingUpdated as the meeting now stands (never its joining link)."""
        fields = plan_of(row).as_row()
        del fields["online_url"], fields["reminder_offsets"]
        return cls(meeting_id=row.id, **fields, public_url=self.public_url(row.id), sequence=row.sequence, **extra)

    async def schedule(self, raw: dict[str, Any], organiser: OrganiserScope | None) -> str:
        """Validate and store a new meeting with its reminders; announce it with MeetingScheduled."""
        plan = validate_meeting(raw, now=utcnow())
        meeting_id = str(uuid.uuid4())
        async with self.uows.begin() as uow:
            region_id = await check_scope(uow.session, organiser, plan.scope_type, plan.scope_id)
            # a session joins a conference of the organiser's own part of the network only
            if plan.parent_meeting_id is not None and not await queries.meeting_exists(
                    uow.session, plan.parent_meeting_id, organiser):
                raise InvalidMeeting({"parent_meeting_id": "There is no conference with that id"})
            row = await queries.insert_meeting(uow.session, {
                "id": meeting_id, "region_id": region_id, "check_in_code": new_check_in_code(),
                "created_by": organiser.organiser_id if organiser else None, **plan.as_row(),
            })
            await self.reminders.plan(uow, row)
            await uow.emit(self._announced(row, ev.MeetingScheduled))
        return meeting_id

    async def update(self, meeting_id: str, raw: dict[str, Any], organiser: OrganiserScope | None) -> list[str]:
        """Change a meeting (who it is for too, within the organiser's scope); publish MeetingUpdated with SEQUENCE
        raised (notifications announces it to members newly in scope). Returns the changed fields."""
        async with self.uows.begin() as uow:
            row = await queries.locked_meeting(uow.session, meeting_id)
            await check_scope(uow.session, organiser, row.scope_type, row.scope_id)
            after, changed = plan_change(plan_of(row), status=row.status, raw=raw, now=utcnow())
            if not changed:
                return []
            values = {k: v for k, v in after.as_row().items() if k in changed}
            if scope_moves(changed):  # the organiser must look after where it moves to as well
                values["region_id"] = await check_scope(uow.session, organiser, after.scope_type, after.scope_id)
            new = await queries.change_meeting(uow.session, meeting_id, values)
            if "starts_at" in changed or "reminder_offsets" in changed:
                await self.reminders.plan(uow, new)
            events: list[EventData] = [self._announced(new, ev.MeetingUpdated, changed=changed)]
            if "capacity" in changed:
                events += await hand_out_freed_places(uow, Places.of(new))
            await uow.emit(*events)
        return changed

    async def cancel(self, meeting_id: str, reason: str | None, organiser: OrganiserScope | None) -> bool:
        """Cancel a meeting (idempotent): no more RSVPs or reminders; MeetingCancelled with SEQUENCE raised."""
        async with self.uows.begin() as uow:
            row = await queries.locked_meeting(uow.session, meeting_id)
            await check_scope(uow.session, organiser, row.scope_type, row.scope_id)
            if row.status == "cancelled":
                return False
            reason = cancel_reason(reason)
            new = await queries.change_meeting(uow.session, meeting_id, {
                "status": "cancelled", "cancelled_at": utcnow(), "cancel_reason": reason,
            })
            await queries.cancel_pending_reminders(uow.session, meeting_id)
            await uow.emit(ev.MeetingCancelled(meeting_id=meeting_id, reason=reason, sequence=new.sequence))
        return True

    # what the listing, the feeds and organisers see --------------------------------------------------------------
    async def get(self, meeting_id: str, within: OrganiserScope | None = None) -> Row:
        """The meeting; MeetingNotFound when there is none, or when it lies outside `within` (an API key's scope)."""
        async with self.uows.begin() as uow:
            return await queries.get_meeting(uow.session, meeting_id, within)

    async def find(self, **filters: Unpack[MeetingFilters]) -> list[Row]:
        """Meetings in start order, filtered as the public listing and the feeds ask."""
        async with self.uows.begin() as uow:
            return await queries.list_meetings(uow.session, **filters)

    async def rsvps_of_member(self, member_id: str, organiser: OrganiserScope) -> list[Row]:
        """A member's RSVPs to the meetings the organiser's (or API key's) scope covers, oldest first."""
        async with self.uows.begin() as uow:
            rows = await queries.rsvps_of_member(uow.session, member_id)
            return [row for row in rows if await covers(uow.session, organiser, row.scope_type, row.scope_id)]

    async def own(self, meeting_id: str, who: OrganiserScope) -> Row:
        """The meeting, for an organiser whose scope covers it (a group's covers its sub-teams' meetings):
        MeetingNotFound when there is none, NotYourMeeting when it is someone else's."""
        async with self.uows.begin() as uow:
            row = await queries.get_meeting(uow.session, meeting_id)
            if not await queries.meeting_exists(uow.session, meeting_id, who):
                raise NotYourMeeting("This meeting is outside the part of the network you organise")
            return row

    async def covers_member(self, member_id: str, who: OrganiserScope) -> bool:
        """Whether `who` looks after the member: an organiser adds only their own members to a meeting by id."""
        async with self.uows.begin() as uow:
            return await queries.member_covered(uow.session, member_id, who)

    async def organiser_page(self, within: OrganiserScope, page: int, title: str = "") -> MeetingsPage:
        """A page of the meetings `within` looks after, still to come first (soonest first), then those over (latest
        first), with how many are going and waitlisted for each."""
        now: datetime = utcnow()
        async with self.uows.begin() as uow:
            rows, has_next = await queries.organiser_meetings(uow.session, within, page=page, per_page=ORGANISER_PAGE,
                                                              now=now, title=title)
            counts = await queries.rsvp_counts_of(uow.session, [row.id for row in rows])
            names = await queries.unit_names_of(uow.session, sorted({row.scope_id for row in rows if row.scope_id}))
        for_whom = {row.id: scope_label(row.scope_type, row.scope_id, names) for row in rows}
        return MeetingsPage([row for row in rows if row.ends_at >= now], [row for row in rows if row.ends_at < now],
                            counts, for_whom, has_next)

    async def count(self, within: OrganiserScope | None = None) -> int:
        async with self.uows.begin() as uow:
            return await queries.count_meetings(uow.session, within)

    async def rsvp_counts(self, meeting_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """People going and waitlisted for each meeting (RSVPs, not guests), for the organisers' lists."""
        async with self.uows.begin() as uow:
            return await queries.rsvp_counts_of(uow.session, meeting_ids)

    async def units(self) -> list[Row]:
        """Regions, groups and sub-teams by kind and name (for pickers and the listing's filters)."""
        async with self.uows.begin() as uow:
            return await queries.units(uow.session)
