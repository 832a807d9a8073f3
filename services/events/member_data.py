"""Events' part of a member's data download (MemberDataRequested): their RSVPs, waitlist places and attendance,
with the meetings they were for, and what this service keeps of their membership."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.events import db as tables
from shared.crypto import KeyStore
from shared.events.catalog import EventsDataOfMember, MemberDataRequested
from shared.member_data import answer, when
from shared.uow import UnitOfWork


async def answer_member_data(uow: UnitOfWork, member_keys: KeyStore, event: MemberDataRequested) -> None:
    session = uow.session
    r, mt = tables.rsvps, tables.meetings
    rows = (await session.execute(
        select(r, mt.c.title, mt.c.starts_at, mt.c.venue)
        .join(mt, mt.c.id == r.c.meeting_id)
        .where(r.c.member_id == event.member_id)
        .order_by(r.c.created_at)
    )).all()
    m = tables.members
    member = (await session.execute(
        select(m.c.region_id, m.c.group_ids, m.c.subteam_ids, m.c.status).where(m.c.member_id == event.member_id)
    )).first()
    part: dict[str, Any] = {
        "about": "Your RSVPs to meetings, your places on waiting lists and your attendance.",
        "rsvps": [
            {
                "meeting": row.title,
                "starts_at": when(row.starts_at),
                "venue": row.venue,
                "status": row.status,
                "waitlist_position": row.waitlist_position,
                "guests": row.guests,
                "name_given": row.name,
                "email_given": row.email,
                "rsvped_at": when(row.created_at),
                "cancelled_at": when(row.cancelled_at),
                "attended_at": when(row.attended_at),
                "checked_in_by": row.attendance_method,
            }
            for row in rows
        ],
        "membership_as_events_knows_it": dict(member._mapping) if member else None,
    }
    await uow.emit(await answer(session, member_keys, EventsDataOfMember, event.request_id, event.member_id, part))
