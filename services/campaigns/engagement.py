"""The engagement ladder: each member's level, computed from the actions they took and the meetings they attended.

Facts (an action, an attendance) are stored once each; a member's counts and level are recomputed under their
row lock whenever a fact or a role changes (the rule is domain.assess), and a changed level is published as
EngagementLevelChanged in the same unit of work. A new ladder is saved at once and its members moved in the
background (ladder_moves.py); every transaction here applies the ladder under its lock (queries.hold_ladder), taken
before any member's row. Someone who took an action (or RSVPed) before
joining has facts without a member id; the `action:<id>` / `rsvp:<id>` source of their MemberJoined links them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import any_, delete, func, literal, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import db as tables
from services.campaigns import queries
from services.campaigns.domain import (
    DEFAULT_LADDER,
    LadderRung,
    Standing,
    assess,
    place_changes,
)
from services.campaigns.ladder_moves import LadderChange, LadderMoves
from services.campaigns.people import People
from shared.auth import OrganiserScope
from shared.events import catalog as ev
from shared.exports import EXPORT_BATCH
from shared.uow import UnitOfWork, UnitsOfWork


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LongTail:
    """Members who joined and never took part: counts by region and group, and the members themselves (by name,
    with the address an organiser writes to)."""

    by_place: list[dict[str, Any]]
    members: list[dict[str, Any]]
    total: int


LONG_TAIL_COLUMNS = ("name", "email", "region", "groups", "joined_at", "member_id")
NAME_UNAVAILABLE = "(name not available yet)"  # the member's key has not reached campaigns yet
_LADDER = "campaigns.engagement.ladder"  # session.info: the ladder applied in this transaction, under its lock


class EngagementService:
    def __init__(self, uows: UnitsOfWork, people: People | None = None, moves: LadderMoves | None = None) -> None:
        self.uows = uows
        self.people = people or People()
        self.moves = moves or LadderMoves(uows)

    # the ladder ----------------------------------------------------------------------------------------
    async def ladder(self, session: AsyncSession | None = None) -> tuple[LadderRung, ...]:
        """The ladder in force, to show (a transaction that applies it to members uses `applying_ladder`)."""
        if session is None:
            async with self.uows.begin() as uow:
                return await self.ladder(uow.session)
        return await queries.ladder(session) or DEFAULT_LADDER

    async def applying_ladder(self, session: AsyncSession) -> tuple[LadderRung, ...]:
        """The ladder this transaction applies to members, read once (a consumer's batch) under the ladder's shared
        lock, held to the commit: a new ladder's save waits for this transaction, so none applies a replaced ladder
        after its replacement's members have been moved. Taken before any member's row is locked."""
        transaction = session.sync_session.get_transaction()
        cached = session.info.get(_LADDER)
        if cached is not None and cached[0] is transaction:
            return cached[1]  # type: ignore[no-any-return]
        await queries.hold_ladder(session)
        ladder = await queries.ladder(session) or DEFAULT_LADDER
        session.info[_LADDER] = (transaction, ladder)
        return ladder

    async def members_moving(self, ladder: Sequence[LadderRung]) -> int:
        """How many members `ladder` would move to another level, before it is saved (counted in SQL)."""
        async with self.uows.begin() as uow:
            return await queries.count_moving(uow.session, ladder)

    async def set_ladder(self, ladder: Sequence[LadderRung], *, expected: int | None = None) -> LadderChange:
        """Put `ladder` in force at once and move the members whose level it changes: the first chunk now (a small
        change is then done), the rest in the background (ladder_moves.py). `expected`: how many it moves, if the
        caller has just counted them. Returns the change as far as it got."""
        if expected is None:
            expected = await self.members_moving(ladder)
        change = await self.moves.save(ladder, expected)
        progressed = await self.moves.step(change.id) or await self.moves.get(change.id)
        if progressed.moving:
            self.moves.wake.set()
        return progressed

    async def ladder_change(self) -> LadderChange | None:
        """The latest ladder saved and how far moving its members has got."""
        return await self.moves.latest()

    # members, units and roles (membership's events) ----------------------------------------------------
    async def member_joined(self, uow: UnitOfWork, event: ev.MemberJoined) -> None:
        """Keep the member (their address's keyed hash, their name and address sealed with their key) and count
        what they did; the caller has linked their earlier actions (linking.py) first."""
        await self.applying_ladder(uow.session)  # its lock before the member's row
        member = await queries.upsert_joined_member(uow.session, {
            "member_id": event.member_id, "region_id": event.region_id, "group_ids": event.group_ids,
            "subteam_ids": event.subteam_ids, "status": "active", "source": event.source,
            "joined_at": event.joined_at, "updated_at": utcnow(), "email_hash": event.email_hash,
            "name": event.name.model_dump(), "email": event.email.model_dump()})
        if event.source.startswith(("action:", "rsvp:")):
            await queries.link_facts(uow.session, event.source, event.member_id)
        await self.recompute(uow, event.member_id, member=member)

    async def member_profile_updated(self, uow: UnitOfWork, event: ev.MemberProfileUpdated) -> None:
        await self.applying_ladder(uow.session)  # its lock before the member's row (a recompute may follow)
        m = tables.members
        values: dict[str, Any] = {"updated_at": utcnow(), **place_changes(event)}
        if event.name is not None:
            values["name"] = event.name.model_dump()
        if event.email is not None:
            values["email"] = event.email.model_dump()
        if event.email_hash:
            values["email_hash"] = event.email_hash
        await uow.session.execute(update(m).where(m.c.member_id == event.member_id).values(**values))

    async def member_left(self, uow: UnitOfWork, member_id: str) -> None:
        await self.applying_ladder(uow.session)  # its lock before the member's row, as every handler here
        m = tables.members
        await uow.session.execute(
            update(m).where(m.c.member_id == member_id).values(status="left", updated_at=utcnow()))

    async def member_erased(self, uow: UnitOfWork, member_id: str) -> None:
        """Forget the member here: their row (address hash, sealed name and address). Their facts keep the member
        id (no personal data): what they did still counts for campaigns, and stays theirs."""
        await self.applying_ladder(uow.session)  # its lock before the member's row, as every handler here
        await uow.session.execute(delete(tables.members).where(tables.members.c.member_id == member_id))
        f = tables.engagement_facts
        await uow.session.execute(update(f).where(f.c.member_id == member_id).values(link_ref=None))

    async def unit_defined(self, uow: UnitOfWork, event: ev.OrganisationUnitDefined) -> None:
        u = tables.units
        values = {"kind": event.kind, "name": event.name, "parent_id": event.parent_id}
        await uow.session.execute(
            pg_insert(u).values(unit_id=event.unit_id, **values)
            .on_conflict_do_update(index_elements=[u.c.unit_id], set_=values)
        )

    async def role_granted(self, uow: UnitOfWork, event: ev.RoleGranted) -> None:
        if not event.member_id:
            return
        await self.applying_ladder(uow.session)  # its lock before the member's row
        m = tables.members
        await uow.session.execute(
            update(m).where(m.c.member_id == event.member_id, ~(literal(event.role) == any_(m.c.roles)))
            .values(roles=func.array_append(m.c.roles, event.role))
        )
        await self.recompute(uow, event.member_id, reason=f"became {event.role.replace('_', ' ')}")

    # facts -------------------------------------------------------------------------------------------
    async def _fact(self, uow: UnitOfWork, kind: str, fact_id: str, member_id: str | None,
                    link_ref: str | None, occurred_at: datetime) -> None:
        if member_id is None and link_ref is not None:  # they may have joined already
            member_id = await queries.member_joined_from(uow.session, link_ref)
        inserted = await queries.insert_fact(uow.session, kind, fact_id, member_id, link_ref, occurred_at)
        if inserted and member_id is not None:
            await self.recompute(uow, member_id)

    async def action_taken(self, uow: UnitOfWork, event: ev.ActionTaken) -> None:
        # The action may have been linked to its member (by its address) since it was published.
        member_id = event.member_id or await queries.action_member(uow.session, event.action_id)
        link = f"action:{event.action_id}" if member_id is None else None
        await self._fact(uow, "action", event.action_id, member_id, link, event.taken_at)

    async def attendance_recorded(self, uow: UnitOfWork, event: ev.AttendanceRecorded) -> None:
        link = f"rsvp:{event.rsvp_id}" if event.member_id is None else None
        await self._fact(uow, "attendance", event.rsvp_id, event.member_id, link, event.attended_at)

    async def recompute(self, uow: UnitOfWork, member_id: str, *, ladder: Sequence[LadderRung] | None = None,
                        reason: str = "", member: Standing | None = None) -> int:
        """Count the member's facts, find their level and publish EngagementLevelChanged if it moved (returns 1).

        `member`: their standing, if the caller has just written (and so locked) their row."""
        session = uow.session
        ladder = ladder or await self.applying_ladder(session)  # its lock before the member's row
        if member is None:
            member = await queries.standing_for_update(session, member_id)
        if member is None:
            return 0  # not joined (yet): their facts wait for MemberJoined
        actions, attended = await queries.fact_counts(session, member_id)
        outcome = assess(member, actions=actions, attended=attended, ladder=ladder, reason=reason)
        if outcome.level_changed:
            await queries.set_counts_and_level(session, member_id, actions, attended, outcome.level, utcnow())
        elif outcome.counts_changed:
            await queries.set_counts(session, member_id, actions, attended)
        if outcome.event is None:
            return 0
        await uow.emit(outcome.event)
        return 1

    # queries -----------------------------------------------------------------------------------------
    async def member(self, member_id: str) -> Any:
        async with self.uows.begin() as uow:
            return await queries.member(uow.session, member_id)

    async def long_tail(self, organiser: OrganiserScope, *, region_id: str | None = None, group_id: str | None = None,
                        joined_before: datetime | None = None, limit: int = 500) -> LongTail:
        """Active members in the organiser's scope who have taken no action and attended no meeting."""
        async with self.uows.begin() as uow:
            rows = await queries.members_without_part(uow.session, organiser, region_id=region_id,
                                                      group_id=group_id, joined_before=joined_before, limit=limit)
            total, counted = await queries.without_part_by_place(uow.session, organiser, region_id=region_id,
                                                                 group_id=group_id, joined_before=joined_before)
            names = await queries.unit_names(uow.session)
            contacts = await self.people.contacts(uow.session, [r.member_id for r in rows])
        places = {(region, group): n for region, group, n in counted}
        by_place = [
            {"region_id": region, "region": names.get(region, region or "No region"), "group_id": group,
             "group": names.get(group, group or "No group"), "members": n}
            for (region, group), n in sorted(places.items(), key=lambda kv: (-kv[1], str(kv[0])))
        ]
        members = [
            {"member_id": r.member_id, "name": contact.name if contact else NAME_UNAVAILABLE,
             "email": contact.email if contact else "", "region_id": r.region_id,
             "region": names.get(r.region_id, r.region_id or ""),
             "groups": [names.get(g, g) for g in r.group_ids or []], "joined_at": r.joined_at}
            for r in rows
            for contact in [contacts.get(r.member_id)]
        ]
        return LongTail(by_place, members, total)

    async def long_tail_rows(self, organiser: OrganiserScope, *, region_id: str | None = None,
                             group_id: str | None = None,
                             joined_before: datetime | None = None) -> AsyncIterator[list[list[Any]]]:
        """Every member of the long tail (not only the page's first 500) as rows of its export (LONG_TAIL_COLUMNS),
        a batch at a time: read by one server-side cursor, their names and addresses opened a batch at a time
        (on a connection of their own, while the cursor stays open)."""
        query = queries.without_part(organiser, region_id=region_id, group_id=group_id, joined_before=joined_before)
        async with self.uows.begin() as uow:
            names = await queries.unit_names(uow.session)
            result = await uow.session.stream(query.execution_options(yield_per=EXPORT_BATCH))
            async for batch in result.partitions(EXPORT_BATCH):
                async with self.uows.begin() as other:
                    contacts = await self.people.contacts(other.session, [r.member_id for r in batch])
                yield [[contact.name if contact else NAME_UNAVAILABLE, contact.email if contact else "",
                        names.get(r.region_id, r.region_id or ""),
                        "; ".join(names.get(g, g) for g in r.group_ids or []),
                        r.joined_at.isoformat() if r.joined_at else "", r.member_id]
                       for r in batch for contact in [contacts.get(r.member_id)]]
