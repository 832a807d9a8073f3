"""The events service's SQL: each function one statement (or a short fixed sequence) on a session it is given.

The use cases decide (with the rules in domain.py) and call these to read and write; places are only ever changed
under the meeting's row lock (`locked_meeting`), taken first, so counters never overshoot.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any, TypedDict

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, text, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.events import db as tables
from services.events.domain import MeetingNotFound, RsvpNotFound
from shared.auth import OrganiserScope
from shared.db import any_of

m, r, u, rem, members = tables.meetings, tables.rsvps, tables.units, tables.reminders, tables.members


def utcnow() -> datetime:
    return datetime.now(UTC)


# The read model of members and units ---------------------------------------------------------------------------
async def upsert_member(session: AsyncSession, member_id: str, values: dict[str, Any]) -> None:
    await session.execute(
        pg_insert(members).values(member_id=member_id, **values)
        .on_conflict_do_update(index_elements=[members.c.member_id], set_=values)
    )


async def link_rsvps_to_member(session: AsyncSession, member_id: str, person_refs: Sequence[str],
                               rsvp_id: str | None = None) -> list[Row]:
    """RSVPs made for these person refs (a member's address) or with this id, not yet linked to a member, are now
    theirs; the linked ones (id, meeting_id, status, attended_at)."""
    which: list[ColumnElement[bool]] = [r.c.person_ref.in_(list(person_refs))] if person_refs else []
    if rsvp_id:
        which.append(r.c.id == rsvp_id)
    if not which:
        return []
    return list((await session.execute(
        update(r).where(or_(*which), r.c.member_id.is_(None)).values(member_id=member_id)
        .returning(r.c.id, r.c.meeting_id, r.c.status, r.c.attended_at)
    )).all())


async def member_with_hash(session: AsyncSession, email_hash: str) -> str | None:
    """The member (still a member) whose address has this keyed hash, if events knows them."""
    return (await session.execute(
        select(members.c.member_id).where(members.c.email_hash == email_hash, members.c.status == "active").limit(1)
    )).scalar()


async def sealed_members(session: AsyncSession, member_ids: set[str]) -> list[Row]:
    """Members' sealed names and addresses (member_id, name, email) with the copy of their key, where it is here
    and not destroyed: one statement."""
    if not member_ids:
        return []
    k = tables.member_keys
    return list((await session.execute(
        select(members.c.member_id, members.c.name, members.c.email, k.c.key)
        .join(k, k.c.key_id == members.c.member_id)
        .where(any_of(members.c.member_id, member_ids), k.c.key.is_not(None))
    )).all())


async def update_member(session: AsyncSession, member_id: str, values: dict[str, Any]) -> None:
    await session.execute(update(members).where(members.c.member_id == member_id).values(**values))


async def delete_member(session: AsyncSession, member_id: str) -> None:
    await session.execute(delete(members).where(members.c.member_id == member_id))


async def anonymise_rsvps_of(session: AsyncSession, member_id: str) -> list[str]:
    """Blank the member's name and email on their RSVPs (the rows stay, still the member's: places add up and the
    member id keeps counting what they did); their ids."""
    return list(
        (
            await session.execute(
                update(r)
                .where(r.c.member_id == member_id)
                .values(name=None, email=None, person_ref=func.concat("erased:", r.c.id),
                        updated_at=utcnow())
                .returning(r.c.id)
            )
        ).scalars().all()
    )


async def upsert_unit(session: AsyncSession, unit_id: str, values: dict[str, Any]) -> None:
    await session.execute(
        pg_insert(u).values(unit_id=unit_id, **values).on_conflict_do_update(index_elements=[u.c.unit_id], set_=values)
    )


async def parent_of(session: AsyncSession, unit_id: str) -> str | None:
    return (await session.execute(select(u.c.parent_id).where(u.c.unit_id == unit_id))).scalar()


async def units(session: AsyncSession) -> list[Row]:
    return list((await session.execute(select(u).order_by(u.c.kind, u.c.name))).all())


async def unit_names_of(session: AsyncSession, unit_ids: Sequence[str]) -> dict[str, str]:
    """The names of these units, by id (those known here)."""
    return dict((await session.execute(select(u.c.unit_id, u.c.name).where(any_of(u.c.unit_id, unit_ids)))).all())


# Meetings -----------------------------------------------------------------------------------------------------
async def meeting_exists(session: AsyncSession, meeting_id: str, within: OrganiserScope | None = None) -> bool:
    """Whether the meeting exists (and lies in `within`'s scope, when given)."""
    found = await session.execute(select(m.c.id).where(m.c.id == meeting_id, in_scope(within)))
    return found.first() is not None


async def insert_meeting(session: AsyncSession, values: dict[str, Any]) -> Row:
    return (await session.execute(pg_insert(m).values(**values).returning(*m.c))).one()


async def locked_meeting(session: AsyncSession, meeting_id: str) -> Row:
    """The meeting, its row locked until the transaction ends: RSVPs to it queue here."""
    row = (await session.execute(select(m).where(m.c.id == meeting_id).with_for_update())).first()
    if row is None:
        raise MeetingNotFound(meeting_id)
    return row


async def change_meeting(session: AsyncSession, meeting_id: str, values: dict[str, Any]) -> Row:
    """Write changed fields with SEQUENCE raised (calendars take the new version)."""
    return (
        await session.execute(
            update(m).where(m.c.id == meeting_id)
            .values(**values, sequence=m.c.sequence + 1, updated_at=utcnow()).returning(*m.c)
        )
    ).one()


def in_scope(who: OrganiserScope | None) -> ColumnElement[bool]:
    """SQL: the meeting lies in `who`'s part of the network (as `OrganiserScope.covers` decides; None: anyone's)."""
    if who is None or who.is_network:
        return true()
    own = and_(m.c.scope_type == who.scope_type, m.c.scope_id == who.scope_id)
    if who.scope_type == "region":
        return or_(own, m.c.region_id == who.scope_id)
    if who.scope_type == "group":
        subteams = select(u.c.unit_id).where(u.c.parent_id == who.scope_id)
        return or_(own, and_(m.c.scope_type == "subteam", m.c.scope_id.in_(subteams)))
    return own


async def member_covered(session: AsyncSession, member_id: str, who: OrganiserScope) -> bool:
    """Whether the member (as membership last told us) is in `who`'s part of the network: their region, a group or
    sub-team of theirs."""
    row = (await session.execute(select(members).where(members.c.member_id == member_id))).first()
    if row is None:
        return False
    return who.covers("member", None, row.region_id, ancestors=[*row.group_ids, *row.subteam_ids])


async def get_meeting(session: AsyncSession, meeting_id: str, within: OrganiserScope | None = None) -> Row:
    """The meeting; MeetingNotFound also when it lies outside `within`'s scope (an API key's, an organiser's)."""
    row = (await session.execute(select(m).where(m.c.id == meeting_id, in_scope(within)))).first()
    if row is None:
        raise MeetingNotFound(meeting_id)
    return row


class MeetingFilters(TypedDict, total=False):
    """What the listing, the feeds and the APIs filter meetings by (see `list_meetings`)."""

    region_id: str | None
    group_id: str | None
    kind: str | None
    on_or_after: date | None
    before: date | None
    scope_type: str | None
    scope_id: str | None
    within: OrganiserScope | None
    include_cancelled: bool
    upcoming_only: bool
    limit: int
    offset: int


async def list_meetings(
    session: AsyncSession,
    *,
    region_id: str | None = None,
    group_id: str | None = None,
    kind: str | None = None,
    on_or_after: date | None = None,
    before: date | None = None,
    scope_type: str | None = None,
    scope_id: str | None = None,
    within: OrganiserScope | None = None,
    include_cancelled: bool = False,
    upcoming_only: bool = True,
    limit: int = 200,
    offset: int = 0,
) -> list[Row]:
    """Meetings in start order, filtered as the public listing and the feeds ask; `within`: an organiser's or an
    API key's scope (only the meetings it covers)."""
    q = select(m).where(in_scope(within))
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
    return list((await session.execute(q)).all())


async def organiser_meetings(session: AsyncSession, within: OrganiserScope, *, page: int, per_page: int,
                             now: datetime, title: str = "") -> tuple[list[Row], bool]:
    """One page of the organisers' list of meetings in `within`'s scope (whose title contains `title`): those not
    over at `now`, soonest first, then those over, latest first; and whether there is a next page. Both parts are
    read by the end index (`ix_meetings_ends_at`: end, start, id), so a page costs the meetings still to come and
    those it shows, not the network's history of meetings."""
    where = [in_scope(within)]
    if title:
        where.append(func.lower(m.c.title).contains(title.lower(), autoescape=True))
    upcoming = int((await session.execute(
        select(func.count()).select_from(m).where(*where, m.c.ends_at >= now)
    )).scalar_one())
    start, wanted = (page - 1) * per_page, per_page + 1
    rows: list[Row] = []
    if start < upcoming:
        # The meetings still to come are found by the end index and only then sorted by start: ordered by the start
        # index, PostgreSQL would walk every meeting that ever started before reaching the first still to come.
        coming = select(m.c.id, m.c.starts_at).where(*where, m.c.ends_at >= now).cte("coming").prefix_with(
            "MATERIALIZED")
        shown = (select(coming.c.id, coming.c.starts_at).order_by(coming.c.starts_at, coming.c.id).offset(start)
                 .limit(wanted).subquery())
        rows += (await session.execute(
            select(m).join(shown, shown.c.id == m.c.id).order_by(shown.c.starts_at, shown.c.id)
        )).all()
    if len(rows) < wanted:
        rows += (await session.execute(
            select(m).where(*where, m.c.ends_at < now).order_by(m.c.ends_at.desc(), m.c.id)
            .offset(max(start - upcoming, 0)).limit(wanted - len(rows))
        )).all()
    return rows[:per_page], len(rows) > per_page


async def count_meetings(session: AsyncSession, within: OrganiserScope | None = None) -> int:
    return int((await session.execute(select(func.count()).select_from(m).where(in_scope(within)))).scalar_one())


# Reminders ----------------------------------------------------------------------------------------------------
async def replace_pending_reminders(session: AsyncSession, meeting_id: str,
                                    due: Sequence[tuple[int, datetime]]) -> None:
    """The meeting's pending reminders become `due` (minutes before, due time); a published one is kept, so it is
    never sent again."""
    await session.execute(delete(rem).where(rem.c.meeting_id == meeting_id, rem.c.status == "pending"))
    if due:
        await session.execute(
            pg_insert(rem)
            .values([{"id": str(uuid.uuid4()), "meeting_id": meeting_id, "minutes_before": o, "due_at": d}
                     for o, d in due])
            .on_conflict_do_nothing(constraint="uq_reminders_meeting_offset")
        )


async def cancel_pending_reminders(session: AsyncSession, meeting_id: str) -> None:
    await session.execute(
        update(rem).where(rem.c.meeting_id == meeting_id, rem.c.status == "pending").values(status="cancelled")
    )


async def claim_due_reminders(session: AsyncSession, limit: int) -> list[Row]:
    """Pending reminders now due of meetings still on, locked (SKIP LOCKED: another instance takes the others)."""
    return list(
        (
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
    )


async def mark_reminders_published(session: AsyncSession, reminder_ids: Sequence[str]) -> None:
    await session.execute(
        update(rem).where(rem.c.id.in_(list(reminder_ids))).values(status="published", published_at=utcnow())
    )


async def next_reminder_due(session: AsyncSession) -> datetime | None:
    return (await session.execute(select(func.min(rem.c.due_at)).where(rem.c.status == "pending"))).scalar()


# RSVPs and places ---------------------------------------------------------------------------------------------
async def rsvp_of(session: AsyncSession, meeting_id: str, person_ref: str) -> Row | None:
    """The person's RSVP to the meeting (one each), whatever its status."""
    return (await session.execute(select(r).where(r.c.meeting_id == meeting_id, r.c.person_ref == person_ref))).first()


async def someone_waiting(session: AsyncSession, meeting_id: str) -> bool:
    query = select(r.c.id).where(r.c.meeting_id == meeting_id, r.c.status == "waitlisted").limit(1)
    return (await session.execute(query)).first() is not None


async def take_places(session: AsyncSession, meeting_id: str, places: int, waitlist_last: int | None = None) -> None:
    """Count `places` more as taken (fewer when negative); `waitlist_last` is the last waitlist position handed out."""
    values: dict[str, Any] = {"going_count": m.c.going_count + places}
    if waitlist_last is not None:
        values["waitlist_last"] = waitlist_last
    await session.execute(update(m).where(m.c.id == meeting_id).values(**values))


async def set_going_count(session: AsyncSession, meeting_id: str, going_count: int) -> None:
    await session.execute(update(m).where(m.c.id == meeting_id).values(going_count=going_count))


async def save_rsvp(session: AsyncSession, rsvp_id: str, values: dict[str, Any], *, new: bool, meeting_id: str,
                    person_ref: str) -> None:
    """Insert the RSVP, or write `values` over the person's cancelled one (one row per person and meeting)."""
    if new:
        await session.execute(pg_insert(r).values(id=rsvp_id, meeting_id=meeting_id, person_ref=person_ref,
                                                  created_at=values["updated_at"], **values))
    else:
        await session.execute(update(r).where(r.c.id == rsvp_id).values(**values))


async def meeting_of_rsvp(session: AsyncSession, rsvp_id: str) -> str | None:
    return (await session.execute(select(r.c.meeting_id).where(r.c.id == rsvp_id))).scalar()


async def locked_rsvp(session: AsyncSession, rsvp_id: str, meeting_id: str | None = None) -> Row | None:
    """The RSVP (of that meeting, if given), its row locked; take the meeting's lock first."""
    query = select(r).where(r.c.id == rsvp_id)
    if meeting_id is not None:
        query = query.where(r.c.meeting_id == meeting_id)
    return (await session.execute(query.with_for_update())).first()


async def locked_rsvp_of_any(session: AsyncSession, meeting_id: str, person_refs: Sequence[str]) -> Row | None:
    """A standing RSVP to the meeting of whichever of `person_refs` has one, locked."""
    query = select(r).where(r.c.meeting_id == meeting_id, r.c.person_ref.in_(list(person_refs)),
                            r.c.status != "cancelled")
    return (await session.execute(query.with_for_update())).first()


async def mark_cancelled(session: AsyncSession, rsvp_id: str) -> None:
    now = utcnow()
    await session.execute(
        update(r).where(r.c.id == rsvp_id)
        .values(status="cancelled", waitlist_position=None, cancelled_at=now, updated_at=now)
    )


async def locked_waitlist(session: AsyncSession, meeting_id: str) -> list[Row]:
    """The meeting's waitlist in position order, locked."""
    query = (select(r).where(r.c.meeting_id == meeting_id, r.c.status == "waitlisted")
             .order_by(r.c.waitlist_position).with_for_update())
    return list((await session.execute(query)).all())


async def mark_going(session: AsyncSession, rsvp_ids: Sequence[str]) -> None:
    """Off the waitlist, with a place."""
    for rsvp_id in rsvp_ids:
        await session.execute(
            update(r).where(r.c.id == rsvp_id).values(status="going", waitlist_position=None, updated_at=utcnow())
        )


async def mark_attended(session: AsyncSession, rsvp_id: str, method: str, at: datetime) -> None:
    await session.execute(
        update(r).where(r.c.id == rsvp_id).values(attended_at=at, attendance_method=method, updated_at=at)
    )


async def get_rsvp(session: AsyncSession, rsvp_id: str) -> Row:
    row = (await session.execute(select(r).where(r.c.id == rsvp_id))).first()
    if row is None:
        raise RsvpNotFound(rsvp_id)
    return row


async def rsvps_of_member(session: AsyncSession, member_id: str) -> list[Row]:
    """A member's RSVPs, oldest first, each with where its meeting lies (to tell whose scope covers it)."""
    q = (select(r, m.c.scope_type, m.c.scope_id, m.c.region_id).join(m, m.c.id == r.c.meeting_id)
         .where(r.c.member_id == member_id).order_by(r.c.created_at, r.c.id))
    return list((await session.execute(q)).all())


async def list_rsvps(session: AsyncSession, meeting_id: str, *, search: str = "", statuses: Sequence[str] = (),
                     limit: int = 1000, offset: int = 0) -> list[Row]:
    q = select(r).where(r.c.meeting_id == meeting_id)
    if statuses:
        q = q.where(r.c.status.in_(list(statuses)))
    if search.strip():
        like = f"%{search.strip().lower()}%"
        q = q.where(or_(func.lower(r.c.name).like(like), func.lower(r.c.email).like(like)))
    q = q.order_by(r.c.status, r.c.waitlist_position.nulls_first(), func.lower(r.c.name), r.c.created_at)
    return list((await session.execute(q.limit(limit).offset(offset))).all())


async def rsvp_counts_of(session: AsyncSession, meeting_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """People going and waitlisted for each of the meetings, in one statement (for organisers' lists)."""
    counts: dict[str, dict[str, int]] = {i: {"going": 0, "waitlisted": 0} for i in meeting_ids}
    if not meeting_ids:
        return counts
    rows = await session.execute(
        select(r.c.meeting_id, r.c.status, func.count())
        .where(any_of(r.c.meeting_id, meeting_ids), r.c.status.in_(("going", "waitlisted")))
        .group_by(r.c.meeting_id, r.c.status)
    )
    for meeting_id, status, n in rows:
        counts[meeting_id][status] = n
    return counts


async def count_rsvps(session: AsyncSession, meeting_id: str) -> dict[str, int]:
    """Going, waitlisted, cancelled, attended and (once the meeting is over) no-shows."""
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
