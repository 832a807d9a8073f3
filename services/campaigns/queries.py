"""The campaigns service's queries: the statements its use cases and handlers share, and the tuned ones.

The engagement consumer runs a few statements for every event it handles; they are built once here, so
SQLAlchemy finds each compiled in its cache at once. Everything takes the unit of work's session.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    any_,
    bindparam,
    delete,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import db as tables
from services.campaigns.domain import CampaignNotFound, Constituency, LadderRung, Standing, postcode_keys
from shared.auth import OrganiserScope
from shared.db import any_of


async def one(session: AsyncSession, query: Any, missing: LookupError) -> Row:
    """The query's first row, or `missing` raised."""
    row = (await session.execute(query)).first()
    if row is None:
        raise missing
    return row


# Places: units and their parents ------------------------------------------------------------------------------
def in_scope(who: OrganiserScope | None) -> ColumnElement[bool]:
    """SQL: the campaign lies in `who`'s part of the network, as `OrganiserScope.covers` decides with the
    campaign's parents (its region; a sub-team's group). None: anyone's."""
    c, u = tables.campaigns, tables.units
    if who is None or who.is_network:
        return true()
    own = and_(c.c.scope_type == who.scope_type, c.c.scope_id == who.scope_id)
    if who.scope_type == "region":
        return or_(own, c.c.region_id == who.scope_id)
    return or_(own, c.c.scope_id.in_(select(u.c.unit_id).where(u.c.parent_id == who.scope_id)))




async def ancestors(session: AsyncSession, unit_id: str | None) -> list[str]:
    """The unit's parents, nearest first, from membership's organisation events."""
    u = tables.units
    found: list[str] = []
    current = unit_id
    while current and len(found) < 5:
        current = (await session.execute(select(u.c.parent_id).where(u.c.unit_id == current))).scalar()
        if current:
            found.append(current)
    return found


async def region_of(session: AsyncSession, scope_type: str, scope_id: str | None) -> str | None:
    """The region a scope lies in (None for the network, or a unit no region is above)."""
    if scope_type == "network" or scope_id is None:
        return None
    if scope_type == "region":
        return scope_id
    u = tables.units
    for unit in await ancestors(session, scope_id):
        kind = (await session.execute(select(u.c.kind).where(u.c.unit_id == unit))).scalar()
        if kind == "region":
            return unit
    return None


# What counts: every action but a letter still waiting for its writer's confirmation.
# Written out in each statement (not a parameter), so the planner sees it is ix_actions_counted_campaign's condition.
COUNTED = or_(tables.actions.c.kind != literal_column("'write_to_mp'"),
              tables.actions.c.letter_confirmed_at.is_not(None))


async def counted_actions(session: AsyncSession, campaign_ids: Sequence[str]) -> dict[str, int]:
    """The actions counted (COUNTED) for each of these campaigns, in one statement; 0 for none."""
    if not campaign_ids:
        return {}
    x = tables.actions
    rows = (await session.execute(
        select(x.c.campaign_id, func.count()).where(any_of(x.c.campaign_id, campaign_ids), COUNTED)
        .group_by(x.c.campaign_id))).all()
    found = {campaign_id: int(n) for campaign_id, n in rows}
    return {campaign_id: found.get(campaign_id, 0) for campaign_id in campaign_ids}


async def unit_names_of(session: AsyncSession, unit_ids: Sequence[str]) -> dict[str, str]:
    """The names of these units, by id (those the read model knows)."""
    u = tables.units
    return dict((await session.execute(select(u.c.unit_id, u.c.name).where(any_of(u.c.unit_id, unit_ids)))).all())


async def units(session: AsyncSession) -> list[Row]:
    u = tables.units
    return list((await session.execute(select(u).order_by(u.c.kind, u.c.name))).all())


async def member(session: AsyncSession, member_id: str | None) -> Row | None:
    """A member as campaigns keeps them (ids and places, their counts and level), or None."""
    if not member_id:
        return None
    m = tables.members
    return (await session.execute(select(m).where(m.c.member_id == member_id))).first()


# Constituencies ---------------------------------------------------------------------------------------------


async def find_constituency(session: AsyncSession, postcode: str) -> Constituency | None:
    """The constituency of the most precise key of the postcode the dataset holds (unit, sector, district, area)."""
    cp, c = tables.constituency_postcodes, tables.constituencies
    keys = postcode_keys(postcode)
    if not keys:
        return None
    rows = (await session.execute(
        select(cp.c.postcode_key, c).join(c, c.c.code == cp.c.constituency_code).where(cp.c.postcode_key.in_(keys))
    )).all()
    by_key = {r.postcode_key: r for r in rows}
    for key in keys:  # the most precise match wins
        if key in by_key:
            r = by_key[key]
            return Constituency(r.code, r.name, r.mp_name, r.mp_party, r.mp_email)
    return None


# The engagement ladder --------------------------------------------------------------------------------------
_m, _f = tables.members, tables.engagement_facts
_JOINED = ("region_id", "group_ids", "subteam_ids", "status", "source", "joined_at", "updated_at", "email_hash",
           "name", "email")
_join_insert = pg_insert(_m).values({c: bindparam(c, type_=_m.c[c].type) for c in ("member_id", *_JOINED)})
# The upsert returns the member's row, locked by it: what recompute would otherwise read FOR UPDATE.
_UPSERT_JOINED = _join_insert.on_conflict_do_update(
    index_elements=[_m.c.member_id], set_={c: _join_insert.excluded[c] for c in _JOINED}
).returning(*_m.c)
_MEMBER_FOR_UPDATE = select(_m).where(_m.c.member_id == bindparam("m_id")).with_for_update()
_FACT_COUNTS = select(_f.c.kind, func.count()).where(_f.c.member_id == bindparam("m_id")).group_by(_f.c.kind)
_SET_COUNTS = update(_m).where(_m.c.member_id == bindparam("m_id")).values(
    actions=bindparam("n_actions"), attended=bindparam("n_attended"))
_SET_COUNTS_AND_LEVEL = update(_m).where(_m.c.member_id == bindparam("m_id")).values(
    actions=bindparam("n_actions"), attended=bindparam("n_attended"), level=bindparam("new_level"),
    level_since=bindparam("since"))


def standing(row: Any) -> Standing:
    """A member's row as the ladder's rules see it."""
    return Standing(row.member_id, row.level, row.actions, row.attended, tuple(row.roles))


async def upsert_joined_member(session: AsyncSession, values: dict[str, Any]) -> Standing:
    """Store a joined member (`member_id` and the columns of a join) and return their standing, row locked."""
    return standing((await session.execute(_UPSERT_JOINED, values)).one())


async def standing_for_update(session: AsyncSession, member_id: str) -> Standing | None:
    """The member's standing with their row locked (facts are counted under it), or None if they have not joined."""
    row = (await session.execute(_MEMBER_FOR_UPDATE, {"m_id": member_id})).first()
    return None if row is None else standing(row)


async def fact_counts(session: AsyncSession, member_id: str) -> tuple[int, int]:
    """How many actions and meetings attended count for the member."""
    counts: dict[str, int] = dict((await session.execute(_FACT_COUNTS, {"m_id": member_id})).all())  # type: ignore[arg-type]
    return int(counts.get("action", 0)), int(counts.get("attendance", 0))


async def set_counts(session: AsyncSession, member_id: str, actions: int, attended: int) -> None:
    await session.execute(_SET_COUNTS, {"m_id": member_id, "n_actions": actions, "n_attended": attended})


async def set_counts_and_level(session: AsyncSession, member_id: str, actions: int, attended: int, level: str,
                               since: datetime) -> None:
    await session.execute(_SET_COUNTS_AND_LEVEL, {"m_id": member_id, "n_actions": actions, "n_attended": attended,
                                                  "new_level": level, "since": since})


async def link_facts(session: AsyncSession, link_ref: str, member_id: str) -> None:
    """Facts of someone who acted (`action:<id>`, `rsvp:<id>`) before joining become the new member's."""
    await session.execute(
        update(_f).where(_f.c.link_ref == link_ref, _f.c.member_id.is_(None)).values(member_id=member_id))


async def link_facts_of(session: AsyncSession, kind: str, fact_ids: Sequence[str], member_id: str) -> None:
    """These facts (actions or attendances linked to a member by their address) become the member's."""
    if fact_ids:
        await session.execute(update(_f).where(_f.c.kind == kind, _f.c.fact_id.in_(list(fact_ids)),
                                               _f.c.member_id.is_(None)).values(member_id=member_id))


async def action_member(session: AsyncSession, action_id: str) -> str | None:
    """The member an action is linked to, if it is."""
    x = tables.actions
    return (await session.execute(select(x.c.member_id).where(x.c.id == action_id))).scalar()


async def member_with_hash(session: AsyncSession, email_hash: str) -> str | None:
    """The active member whose address has this keyed hash (shared/contact.py address_hash), if known here."""
    return (await session.execute(
        select(_m.c.member_id).where(_m.c.email_hash == email_hash, _m.c.status == "active").limit(1))).scalar()


async def sealed_members(session: AsyncSession, member_ids: Sequence[str]) -> list[Row]:
    """Members' sealed names and addresses (member_id, name, email) with the copy of their key, where it is here."""
    if not member_ids:
        return []
    k = tables.member_keys
    return list((await session.execute(
        select(_m.c.member_id, _m.c.name, _m.c.email, k.c.key)
        .join(k, k.c.key_id == _m.c.member_id)
        .where(any_of(_m.c.member_id, member_ids), k.c.key.is_not(None))
    )).all())


async def member_joined_from(session: AsyncSession, link_ref: str) -> str | None:
    """The member who joined from this action or RSVP, if they have."""
    return (await session.execute(select(_m.c.member_id).where(_m.c.source == link_ref).limit(1))).scalar()


async def insert_fact(session: AsyncSession, kind: str, fact_id: str, member_id: str | None, link_ref: str | None,
                      occurred_at: datetime) -> bool:
    """Store a fact once (by kind and id); False if it was stored already."""
    inserted = (await session.execute(
        pg_insert(_f).values(kind=kind, fact_id=fact_id, member_id=member_id, link_ref=link_ref,
                             occurred_at=occurred_at)
        .on_conflict_do_nothing().returning(_f.c.fact_id)
    )).first()
    return inserted is not None


async def ladder(session: AsyncSession) -> tuple[LadderRung, ...] | None:
    """The organisers' ladder, lowest first, or None when they have not set one."""
    t = tables.engagement_ladder
    rows = (await session.execute(select(t).order_by(t.c.position))).all()
    return tuple(LadderRung.of(r._mapping) for r in rows) if rows else None


async def replace_ladder(session: AsyncSession, ladder: Sequence[LadderRung]) -> None:
    t = tables.engagement_ladder
    await session.execute(delete(t))
    await session.execute(pg_insert(t).values([
        {"position": i, "level": r.level, "label": r.label, "min_actions": r.min_actions,
         "min_attended": r.min_attended, "min_total": r.min_total, "roles": list(r.roles)}
        for i, r in enumerate(ladder)
    ]))


def ladder_level_sql(ladder: Sequence[LadderRung]) -> tuple[str, dict[str, Any]]:
    """The ladder's rule (domain.level_for: the highest level whose rule a member meets, the first one always) as a
    SQL expression over a member row's stored counts and roles, and its parameters."""
    params: dict[str, Any] = {"ladder_0": ladder[0].level}
    whens = []
    for i in range(len(ladder) - 1, 0, -1):
        rung = ladder[i]
        reached = (f"(actions >= :ladder_{i}_actions AND attended >= :ladder_{i}_attended "
                   f"AND actions + attended >= :ladder_{i}_total)")
        if rung.roles:
            reached = f"(roles && CAST(:ladder_{i}_roles AS varchar[]) OR {reached})"
            params[f"ladder_{i}_roles"] = list(rung.roles)
        whens.append(f"WHEN {reached} THEN CAST(:ladder_{i} AS varchar)")
        params.update({f"ladder_{i}": rung.level, f"ladder_{i}_actions": rung.min_actions,
                       f"ladder_{i}_attended": rung.min_attended, f"ladder_{i}_total": rung.min_total})
    return f"CASE {' '.join(whens)} ELSE CAST(:ladder_0 AS varchar) END", params


async def count_moving(session: AsyncSession, ladder: Sequence[LadderRung]) -> int:
    """How many active members `ladder` would move to another level (counted in SQL)."""
    level, params = ladder_level_sql(ladder)
    counted = await session.execute(text(
        f"SELECT count(*) FROM members WHERE status = 'active' AND level IS DISTINCT FROM ({level})"), params)
    return int(counted.scalar_one())


# Who applies a ladder to members holds this lock: shared by the engagement consumer's transactions and by each
# chunk of a ladder's moves, taken before any member's row; exclusive by the save of a new ladder. So the save waits
# for every transaction that read the ladder it replaces, and no transaction applies a ladder once it is replaced.
_LADDER_LOCK = "hashtext(current_schema() || '.engagement_ladder')"


async def hold_ladder(session: AsyncSession, *, exclusive: bool = False) -> None:
    """Take the ladder's lock for the rest of the transaction: shared to apply the ladder, exclusive to replace it."""
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    await session.execute(text(f"SELECT {function}({_LADDER_LOCK})"))


async def next_to_move(session: AsyncSession, ladder: Sequence[LadderRung], after: str | None,
                       limit: int) -> list[str]:
    """The first `limit` active members after `after` (by id) whose level `ladder` changes, as last committed."""
    level, params = ladder_level_sql(ladder)
    return list((await session.execute(text(
        f"SELECT member_id FROM members WHERE status = 'active' AND member_id > :after AND level IS DISTINCT FROM "
        f"({level}) ORDER BY member_id LIMIT :limit"), {**params, "after": after or "", "limit": limit})).scalars())


async def move_to_ladder(session: AsyncSession, ladder: Sequence[LadderRung], member_ids: Sequence[str],
                         since: datetime) -> list[tuple[str, str | None, str]]:
    """Give these members the level `ladder` gives their stored counts and roles; returns (member, previous level,
    new level) of those who moved. Their rows are locked first (a consumer counting one of their facts is waited
    for), then who moves is read in a statement of its own (a newer snapshot: the counts it committed), and the
    movers updated in one statement: no loop over members in Python."""
    if not member_ids:
        return []
    level, params = ladder_level_sql(ladder)
    ids = sorted(member_ids)  # in the order the per-member recompute always took them
    await session.execute(text(
        "SELECT count(*) FROM (SELECT 1 FROM members WHERE member_id = ANY(CAST(:ids AS varchar[])) "
        "ORDER BY member_id FOR UPDATE) locked"), {"ids": ids})
    moved = [(r[0], r[1], r[2]) for r in (await session.execute(text(
        f"SELECT member_id, level, {level} FROM members WHERE member_id = ANY(CAST(:ids AS varchar[])) "
        f"AND status = 'active' AND level IS DISTINCT FROM ({level}) ORDER BY member_id"), {**params, "ids": ids})
    ).all()]
    if moved:
        await session.execute(text(
            "UPDATE members SET level = v.level, level_since = :since FROM unnest(CAST(:ids AS varchar[]), "
            "CAST(:levels AS varchar[])) AS v(member_id, level) WHERE members.member_id = v.member_id"),
            {"since": since, "ids": [m[0] for m in moved], "levels": [m[2] for m in moved]})
    return moved


# A saved ladder's moves (ladder_moves.py) --------------------------------------------------------------------
_lc = tables.ladder_changes


async def start_ladder_change(session: AsyncSession, change_id: Any, ladder: Sequence[LadderRung], expected: int,
                              now: datetime) -> int:
    """Record a new ladder's moves as the one in progress; the one it replaces (if any) is superseded, where it got
    to. Returns how many were superseded (0 or 1)."""
    superseded = await session.execute(
        update(_lc).where(_lc.c.status == "moving").values(status="superseded", finished_at=now))
    await session.execute(pg_insert(_lc).values(
        id=change_id, ladder=[r.as_dict() for r in ladder], status="moving", expected=expected, saved_at=now))
    return int(superseded.rowcount)  # type: ignore[attr-defined]


async def moving_ladder_change(session: AsyncSession, change_id: Any = None, *, skip_locked: bool = True
                               ) -> Row | None:
    """The ladder change in progress (this one, if given), locked: one chunk at a time across instances."""
    query = select(_lc).where(_lc.c.status == "moving")
    if change_id is not None:
        query = query.where(_lc.c.id == change_id)
    return (await session.execute(query.with_for_update(skip_locked=skip_locked))).first()


async def record_ladder_chunk(session: AsyncSession, change_id: Any, *, cursor: str | None, moved: int,
                              published: int, done: bool, now: datetime) -> Row:
    """Count a chunk's moves on its ladder change and move its cursor; `done`: the last chunk."""
    return (await session.execute(
        update(_lc).where(_lc.c.id == change_id)
        .values(cursor=cursor, moved=_lc.c.moved + moved, published=_lc.c.published + published,
                chunks=_lc.c.chunks + 1, status="done" if done else "moving", finished_at=now if done else None)
        .returning(*_lc.c))).one()


async def ladder_change(session: AsyncSession, change_id: Any = None) -> Row | None:
    """A ladder change (the latest saved, without an id)."""
    query = select(_lc).where(_lc.c.id == change_id) if change_id is not None else \
        select(_lc).order_by(_lc.c.saved_at.desc()).limit(1)
    return (await session.execute(query)).first()


def _scope_members(query: Any, m: Any, organiser: OrganiserScope) -> Any:
    """Only the members an organiser looks after: their region's, group's or sub-team's."""
    if organiser.is_network:
        return query
    if organiser.scope_type == "region":
        return query.where(m.c.region_id == organiser.scope_id)
    if organiser.scope_type == "group":
        return query.where(literal(organiser.scope_id) == any_(m.c.group_ids))
    return query.where(literal(organiser.scope_id) == any_(m.c.subteam_ids))


async def members_without_part(session: AsyncSession, organiser: OrganiserScope, *, region_id: str | None,
                               group_id: str | None, joined_before: datetime | None,
                               limit: int | None = None) -> list[Row]:
    """Active members in the organiser's scope who have taken no action and attended no meeting, longest first
    (the first `limit` of them)."""
    query = without_part(organiser, region_id=region_id, group_id=group_id, joined_before=joined_before)
    return list((await session.execute(query.limit(limit))).all())


async def without_part_by_place(session: AsyncSession, organiser: OrganiserScope, *, region_id: str | None,
                                group_id: str | None, joined_before: datetime | None
                                ) -> tuple[int, list[tuple[str | None, str | None, int]]]:
    """How many members `members_without_part` finds, and how many of them in each (region, group) (a member in
    two groups counts in each; one in none under the group None; with `group_id`, that group only), counted by
    PostgreSQL: the long tail's page no longer reads every member of it into Python."""
    tail = without_part(organiser, region_id=region_id, group_id=group_id, joined_before=joined_before).order_by(
        None).subquery()
    total = int((await session.execute(select(func.count()).select_from(tail))).scalar_one())
    group = func.unnest(tail.c.group_ids).table_valued("g").render_derived().lateral()
    counted = (select(tail.c.region_id, group.c.g, func.count())
               .select_from(tail.outerjoin(group, true())).group_by(tail.c.region_id, group.c.g))
    if group_id:
        counted = counted.where(group.c.g == group_id)
    return total, [(r[0], r[1], int(r[2])) for r in (await session.execute(counted)).all()]


def without_part(organiser: OrganiserScope, *, region_id: str | None, group_id: str | None,
                 joined_before: datetime | None) -> Any:
    """The query of `members_without_part` (streamed by the long tail's export)."""
    m = _m
    q = select(m).where(m.c.status == "active", m.c.actions == 0, m.c.attended == 0)
    q = _scope_members(q, m, organiser)
    if region_id:
        q = q.where(m.c.region_id == region_id)
    if group_id:
        q = q.where(literal(group_id) == any_(m.c.group_ids))
    if joined_before is not None:
        q = q.where(m.c.joined_at < joined_before)
    return q.order_by(m.c.joined_at, m.c.member_id)


async def unit_names(session: AsyncSession) -> dict[Any, str]:
    u = tables.units
    return dict((await session.execute(select(u.c.unit_id, u.c.name))).all())  # type: ignore[arg-type]


# Campaigns, asks and meetings ----------------------------------------------------------------------------------


async def locked_campaign(session: AsyncSession, campaign_id: str, *, share: bool = False) -> Row:
    """The campaign, locked: `share` for reading its status while acting on it (closing waits for those)."""
    c = tables.campaigns
    query = select(c).where(c.c.id == campaign_id)
    query = query.with_for_update(read=True) if share else query.with_for_update()
    return await one(session, query, CampaignNotFound(campaign_id))


async def meeting_known(session: AsyncSession, meeting_id: str | None) -> bool:
    m = tables.meetings
    return (await session.execute(select(m.c.meeting_id).where(m.c.meeting_id == meeting_id))).first() is not None
