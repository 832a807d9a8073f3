"""The engagement ladder: each member's level, computed from the actions they took and the meetings they attended.

Facts (an action, an attendance) are stored once each; a member's counts and level are recomputed under their
row lock whenever a fact, a role or the ladder changes, and a changed level is published as
EngagementLevelChanged in the same transaction. Someone who took an action (or RSVPed) before joining has facts
without a member id; the `action:<id>` / `rsvp:<id>` source of their MemberJoined links them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import any_, bindparam, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import db as tables
from services.campaigns.domain import DEFAULT_LADDER, LadderRung, level_for
from shared.auth import OrganiserScope
from shared.db import Database
from shared.events import catalog as ev
from shared.logging import correlation_id_var
from shared.outbox import Outbox


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LongTail:
    """Members who joined and never took part: counts by region and group, and the members themselves."""

    by_place: list[dict[str, Any]]
    members: list[dict[str, Any]]
    total: int


# What the consumer runs for every event, built once (SQLAlchemy then finds each compiled in its cache at once).
_m, _f = tables.members, tables.engagement_facts
_JOINED = ("region_id", "group_ids", "subteam_ids", "status", "source", "joined_at", "updated_at")
_join_insert = pg_insert(_m).values({c: bindparam(c, type_=_m.c[c].type) for c in ("member_id", *_JOINED)})
# The upsert returns the member's row, locked by it: what recompute would otherwise read FOR UPDATE.
UPSERT_JOINED = _join_insert.on_conflict_do_update(
    index_elements=[_m.c.member_id], set_={c: _join_insert.excluded[c] for c in _JOINED}
).returning(*_m.c)
MEMBER_FOR_UPDATE = select(_m).where(_m.c.member_id == bindparam("m_id")).with_for_update()
FACT_COUNTS = select(_f.c.kind, func.count()).where(_f.c.member_id == bindparam("m_id")).group_by(_f.c.kind)
SET_COUNTS = update(_m).where(_m.c.member_id == bindparam("m_id")).values(
    actions=bindparam("n_actions"), attended=bindparam("n_attended"))
SET_COUNTS_AND_LEVEL = update(_m).where(_m.c.member_id == bindparam("m_id")).values(
    actions=bindparam("n_actions"), attended=bindparam("n_attended"), level=bindparam("new_level"),
    level_since=bindparam("since"))
_LADDER = "campaigns.engagement.ladder"  # session.info: the ladder read in this transaction


class EngagementService:
    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox

    # the ladder ----------------------------------------------------------------------------------------
    async def ladder(self, session: AsyncSession | None = None) -> tuple[LadderRung, ...]:
        if session is None:
            async with self.db.transaction() as s:
                return await self.ladder(s)
        transaction = session.sync_session.get_transaction()
        cached = session.info.get(_LADDER)
        if cached is not None and cached[0] is transaction:  # read once per transaction (a consumer's batch)
            return cached[1]  # type: ignore[no-any-return]
        t = tables.engagement_ladder
        rows = (await session.execute(select(t).order_by(t.c.position))).all()
        ladder = tuple(LadderRung(r.level, r.label, r.min_actions, r.min_attended, r.min_total, tuple(r.roles))
                       for r in rows) if rows else DEFAULT_LADDER
        session.info[_LADDER] = (transaction, ladder)
        return ladder

    async def set_ladder(self, ladder: Sequence[LadderRung]) -> int:
        """Replace the ladder and recompute every member; returns how many changed level (each published)."""
        t, m = tables.engagement_ladder, tables.members
        async with self.db.transaction() as session:
            session.info.pop(_LADDER, None)
            await session.execute(delete(t))
            await session.execute(pg_insert(t).values([
                {"position": i, "level": r.level, "label": r.label, "min_actions": r.min_actions,
                 "min_attended": r.min_attended, "min_total": r.min_total, "roles": list(r.roles)}
                for i, r in enumerate(ladder)
            ]))
            changed = 0
            member_ids = (await session.execute(
                select(m.c.member_id).where(m.c.status == "active").order_by(m.c.member_id))).scalars().all()
            for member_id in member_ids:
                changed += await self.recompute(session, member_id, ladder=ladder, reason="the ladder changed")
        return changed

    # members, units and roles (membership's events) ----------------------------------------------------
    async def member_joined(self, session: AsyncSession, event: ev.MemberJoined) -> None:
        f = tables.engagement_facts
        member = (await session.execute(UPSERT_JOINED, {
            "member_id": event.member_id, "region_id": event.region_id, "group_ids": event.group_ids,
            "subteam_ids": event.subteam_ids, "status": "active", "source": event.source,
            "joined_at": event.joined_at, "updated_at": utcnow()})).one()
        if event.source.startswith(("action:", "rsvp:")):
            await session.execute(
                update(f).where(f.c.link_ref == event.source, f.c.member_id.is_(None)).values(member_id=event.member_id)
            )
        await self.recompute(session, event.member_id, member=member)

    async def member_profile_updated(self, session: AsyncSession, event: ev.MemberProfileUpdated) -> None:
        m = tables.members
        values: dict[str, Any] = {"updated_at": utcnow()}
        if {"region_id", "region"} & set(event.changed):
            values["region_id"] = event.region_id
        if {"group_ids", "groups"} & set(event.changed):
            values["group_ids"] = event.group_ids
        if {"subteam_ids", "subteams"} & set(event.changed):
            values["subteam_ids"] = event.subteam_ids
        await session.execute(update(m).where(m.c.member_id == event.member_id).values(**values))

    async def member_left(self, session: AsyncSession, member_id: str) -> None:
        m = tables.members
        await session.execute(update(m).where(m.c.member_id == member_id).values(status="left", updated_at=utcnow()))

    async def member_erased(self, session: AsyncSession, member_id: str) -> None:
        """Forget the member here: their row and the link from their facts (the facts still count for campaigns)."""
        await session.execute(delete(tables.members).where(tables.members.c.member_id == member_id))
        f = tables.engagement_facts
        await session.execute(update(f).where(f.c.member_id == member_id).values(member_id=None, link_ref=None))

    async def unit_defined(self, session: AsyncSession, event: ev.OrganisationUnitDefined) -> None:
        u = tables.units
        values = {"kind": event.kind, "name": event.name, "parent_id": event.parent_id}
        await session.execute(
            pg_insert(u).values(unit_id=event.unit_id, **values)
            .on_conflict_do_update(index_elements=[u.c.unit_id], set_=values)
        )

    async def role_granted(self, session: AsyncSession, event: ev.RoleGranted) -> None:
        if not event.member_id:
            return
        m = tables.members
        await session.execute(
            update(m).where(m.c.member_id == event.member_id, ~(literal(event.role) == any_(m.c.roles)))
            .values(roles=func.array_append(m.c.roles, event.role))
        )
        await self.recompute(session, event.member_id, reason=f"became {event.role.replace('_', ' ')}")

    # facts -------------------------------------------------------------------------------------------
    async def _fact(self, session: AsyncSession, kind: str, fact_id: str, member_id: str | None,
                    link_ref: str | None, occurred_at: datetime) -> None:
        f, m = tables.engagement_facts, tables.members
        if member_id is None and link_ref is not None:  # they may have joined already
            member_id = (await session.execute(
                select(m.c.member_id).where(m.c.source == link_ref).limit(1))).scalar()
        inserted = (await session.execute(
            pg_insert(f).values(kind=kind, fact_id=fact_id, member_id=member_id, link_ref=link_ref,
                                occurred_at=occurred_at)
            .on_conflict_do_nothing().returning(f.c.fact_id)
        )).first()
        if inserted is not None and member_id is not None:
            await self.recompute(session, member_id)

    async def action_taken(self, session: AsyncSession, event: ev.ActionTaken) -> None:
        link = f"action:{event.action_id}" if event.member_id is None else None
        await self._fact(session, "action", event.action_id, event.member_id, link, event.taken_at)

    async def attendance_recorded(self, session: AsyncSession, event: ev.AttendanceRecorded) -> None:
        link = f"rsvp:{event.rsvp_id}" if event.member_id is None else None
        await self._fact(session, "attendance", event.rsvp_id, event.member_id, link, event.attended_at)

    async def recompute(self, session: AsyncSession, member_id: str, *, ladder: Sequence[LadderRung] | None = None,
                        reason: str = "", member: Any = None) -> int:
        """Count the member's facts, find their level and publish EngagementLevelChanged if it moved (returns 1).

        `member`: their row, if the caller has just written (and so locked) it."""
        if member is None:
            member = (await session.execute(MEMBER_FOR_UPDATE, {"m_id": member_id})).first()
        if member is None:
            return 0  # not joined (yet): their facts wait for MemberJoined
        counts: dict[str, int] = dict((await session.execute(FACT_COUNTS, {"m_id": member_id})).all())
        actions, attended = int(counts.get("action", 0)), int(counts.get("attendance", 0))
        ladder = ladder or await self.ladder(session)
        level = level_for(ladder, actions=actions, attended=attended, roles=member.roles)
        changed = level != member.level
        if changed:
            await session.execute(SET_COUNTS_AND_LEVEL, {"m_id": member_id, "n_actions": actions,
                                                         "n_attended": attended, "new_level": level,
                                                         "since": utcnow()})
        elif (actions, attended) != (member.actions, member.attended):
            await session.execute(SET_COUNTS, {"m_id": member_id, "n_actions": actions, "n_attended": attended})
        if changed and (member.level is not None or level != ladder[0].level):
            why = reason or f"{actions} action{'s' if actions != 1 else ''}, {attended} meeting" \
                            f"{'s' if attended != 1 else ''} attended"
            await self.outbox.add_events(
                session,
                [ev.EngagementLevelChanged(member_id=member_id, level=level, previous_level=member.level,
                                           reason=why)],
                correlation_id=correlation_id_var.get(),
            )
            return 1
        return 0

    # queries -----------------------------------------------------------------------------------------
    async def member(self, member_id: str) -> Any:
        m = tables.members
        async with self.db.transaction() as session:
            return (await session.execute(select(m).where(m.c.member_id == member_id))).first()

    async def long_tail(self, organiser: OrganiserScope, *, region_id: str | None = None, group_id: str | None = None,
                        joined_before: datetime | None = None, limit: int = 500) -> LongTail:
        """Active members in the organiser's scope who have taken no action and attended no meeting."""
        m, u = tables.members, tables.units
        q = select(m).where(m.c.status == "active", m.c.actions == 0, m.c.attended == 0)
        q = scope_members(q, m, organiser)
        if region_id:
            q = q.where(m.c.region_id == region_id)
        if group_id:
            q = q.where(literal(group_id) == any_(m.c.group_ids))
        if joined_before is not None:
            q = q.where(m.c.joined_at < joined_before)
        async with self.db.transaction() as session:
            rows = (await session.execute(q.order_by(m.c.joined_at, m.c.member_id))).all()
            names = dict((await session.execute(select(u.c.unit_id, u.c.name))).all())
        places: dict[tuple[str | None, str | None], int] = {}
        for r in rows:
            for g in (r.group_ids or [None]):
                if group_id and g != group_id:
                    continue
                places[(r.region_id, g)] = places.get((r.region_id, g), 0) + 1
        by_place = [
            {"region_id": region, "region": names.get(region, region or "No region"), "group_id": group,
             "group": names.get(group, group or "No group"), "members": n}
            for (region, group), n in sorted(places.items(), key=lambda kv: (-kv[1], str(kv[0])))
        ]
        members = [
            {"member_id": r.member_id, "region_id": r.region_id, "region": names.get(r.region_id, r.region_id or ""),
             "groups": [names.get(g, g) for g in r.group_ids or []], "joined_at": r.joined_at}
            for r in rows[:limit]
        ]
        return LongTail(by_place, members, len(rows))


def scope_members(query: Any, m: Any, organiser: OrganiserScope) -> Any:
    """Only the members an organiser looks after: their region's, group's or sub-team's."""
    if organiser.is_network:
        return query
    if organiser.scope_type == "region":
        return query.where(m.c.region_id == organiser.scope_id)
    if organiser.scope_type == "group":
        return query.where(literal(organiser.scope_id) == any_(m.c.group_ids))
    return query.where(literal(organiser.scope_id) == any_(m.c.subteam_ids))
