"""The dashboard's member figures kept as tallies (`rpt_tallies`) by the reporting projection, so a dashboard reads
one indexed query per figure instead of walking every member in Python (issue 20).

A member counts in a scope (the network, each region they live in or have a group in, each group, each sub-team)
under keys of three kinds: `place` (growth: their region for the network, each of their groups, or "" for none,
and `*` for the scope's total; one row per week they joined in and per week they left in), `level` (the funnel:
their engagement level, "" for none yet) and `partner` (their partner organisation). Each member adds 1 to
`joins` of each key, and 1 to `leaves` once they have left or been erased, so `joins - leaves` counts the members
who are still members. Level and partner keys have no week (`NO_WEEK`). Actions count in the scopes they lie in
under `ask` and `campaign` keys (`joins` the actions, `leaves` those that joined the network with them).

The tallies are kept by subtracting what the members an event batch touches counted for before the batch, and
adding what they count for after it (`kept_up`): a member who rejoins, moves group, leaves, is erased or reaches
another level moves between keys exactly as the figures computed from their rows would, in whatever order the
topics interleave (a group's region defined after its members joined moves them too). One statement computes a
set of members' contributions from the read model's rows; `rebuild-reporting` runs it once for everyone.
Statements name tables without a schema (the rebuild's shadow is reached through `search_path`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events import catalog as ev

NO_WEEK = date(1970, 1, 1)
TOTAL = "*"
# The events that change what a member counts for, with the member they change.
MEMBER_EVENTS: dict[type[Any], str] = {
    ev.MemberJoined: "member_id", ev.MemberProfileUpdated: "member_id", ev.MemberLeft: "member_id",
    ev.MemberErased: "member_id", ev.EngagementLevelChanged: "member_id",
}
UNIT_EVENTS = (ev.OrganisationUnitDefined,)
# The events that place an action (or place it again), with the action.
ACTION_EVENTS: dict[type[Any], str] = {ev.ActionTaken: "action_id", ev.ActionLinkedToMember: "action_id"}

# What each member of `:ids` (every member when NULL) counts for, times `:sign`, added to the tallies. Mirrors the
# scopes of `reports.Scope.members`: a region counts those who live there or have a group whose parent it is.
CONTRIBUTIONS = """
WITH m AS (
  SELECT m.member_id, m.region_id, m.group_ids, m.subteam_ids, m.organisation_id, m.joined_at, m.left_at,
         coalesce(l.level, '') AS level,
         CASE WHEN cardinality(m.group_ids) = 0 THEN ARRAY['']::varchar[] ELSE m.group_ids END AS group_places
  FROM rpt_members m LEFT JOIN rpt_levels l ON l.member_id = m.member_id
  WHERE (CAST(:ids AS varchar[]) IS NULL OR m.member_id = ANY(CAST(:ids AS varchar[])))
), scoped AS (
  SELECT m.*, 'network' AS scope_type, '' AS scope_id, ARRAY[coalesce(m.region_id, '')]::varchar[] AS places
  FROM m
  UNION ALL
  SELECT m.*, 'region', r.region, m.group_places FROM m CROSS JOIN LATERAL (
    SELECT m.region_id AS region UNION SELECT u.parent_id FROM rpt_units u WHERE u.unit_id = ANY(m.group_ids)) r
  WHERE r.region IS NOT NULL
  UNION ALL
  SELECT m.*, 'group', g.id, ARRAY[g.id]::varchar[] FROM m
  CROSS JOIN LATERAL (SELECT DISTINCT unnest(m.group_ids) AS id) g
  UNION ALL
  SELECT m.*, 'subteam', s.id, m.group_places FROM m
  CROSS JOIN LATERAL (SELECT DISTINCT unnest(m.subteam_ids) AS id) s
), keyed AS (
  SELECT scope_type, scope_id, 'place' AS kind, place AS key, joined_at, left_at, true AS weekly
  FROM scoped CROSS JOIN LATERAL unnest(places) AS place
  UNION ALL SELECT scope_type, scope_id, 'place', '*', joined_at, left_at, true FROM scoped
  UNION ALL SELECT scope_type, scope_id, 'level', level, joined_at, left_at, false FROM scoped
  UNION ALL SELECT scope_type, scope_id, 'partner', organisation_id, joined_at, left_at, false FROM scoped
  WHERE organisation_id IS NOT NULL
), deltas AS (
  SELECT scope_type, scope_id, kind, key,
         CASE WHEN weekly THEN date_trunc('week', joined_at AT TIME ZONE 'UTC')::date ELSE DATE '1970-01-01' END
           AS week, 1 AS joins, 0 AS leaves
  FROM keyed
  UNION ALL
  -- Leaving is counted in the week of whichever came last, joining or leaving: someone who "left" before they
  -- joined never counts, as the figures from the rows have it.
  SELECT scope_type, scope_id, kind, key,
         CASE WHEN weekly THEN date_trunc('week', greatest(joined_at, left_at) AT TIME ZONE 'UTC')::date
              ELSE DATE '1970-01-01' END, 0, 1
  FROM keyed WHERE left_at IS NOT NULL
)
INSERT INTO rpt_tallies (scope_type, scope_id, kind, key, week, joins, leaves)
SELECT scope_type, scope_id, kind, key, week, CAST(:sign AS integer) * sum(joins),
       CAST(:sign AS integer) * sum(leaves) FROM deltas GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (scope_type, scope_id, kind, key, week)
DO UPDATE SET joins = rpt_tallies.joins + excluded.joins, leaves = rpt_tallies.leaves + excluded.leaves
"""
# What each action of `:ids` (every action when NULL) counts for, times `:sign`: under `ask` and `campaign` keys
# (`joins` the actions, `leaves` those of them that joined the network), in each scope it lies in as
# the dashboard has always placed it: by its member's places (or those of the member who joined with it), the
# action's own region first.
ACTION_CONTRIBUTIONS = """
WITH a AS (
  SELECT a.ask_id, a.campaign_id, a.join_network,
         coalesce(a.region_id, m1.region_id, m2.region_id) AS place_region,
         coalesce(m1.group_ids, m2.group_ids,
                  CASE WHEN a.group_id IS NULL THEN '{}'::varchar[] ELSE ARRAY[a.group_id]::varchar[] END)
           AS place_groups,
         coalesce(m1.subteam_ids, m2.subteam_ids, '{}'::varchar[]) AS place_subteams
  FROM rpt_actions a
  LEFT JOIN rpt_members m1 ON m1.member_id = a.member_id
  LEFT JOIN rpt_members m2 ON a.member_id IS NULL AND m2.source = 'action:' || a.action_id
  WHERE CAST(:ids AS varchar[]) IS NULL OR a.action_id = ANY(CAST(:ids AS varchar[]))
), scoped AS (
  SELECT a.*, 'network' AS scope_type, '' AS scope_id FROM a
  UNION ALL SELECT a.*, 'region', a.place_region FROM a WHERE a.place_region IS NOT NULL
  UNION ALL SELECT a.*, 'group', g.id FROM a CROSS JOIN LATERAL (SELECT DISTINCT unnest(a.place_groups) AS id) g
  UNION ALL
  SELECT a.*, 'subteam', s.id FROM a CROSS JOIN LATERAL (SELECT DISTINCT unnest(a.place_subteams) AS id) s
), keyed AS (
  SELECT scope_type, scope_id, 'ask' AS kind, ask_id AS key, join_network FROM scoped
  UNION ALL SELECT scope_type, scope_id, 'campaign', campaign_id, join_network FROM scoped
)
INSERT INTO rpt_tallies (scope_type, scope_id, kind, key, week, joins, leaves)
SELECT scope_type, scope_id, kind, key, DATE '1970-01-01', CAST(:sign AS integer) * count(*),
       CAST(:sign AS integer) * count(*) FILTER (WHERE join_network) FROM keyed
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (scope_type, scope_id, kind, key, week)
DO UPDATE SET joins = rpt_tallies.joins + excluded.joins, leaves = rpt_tallies.leaves + excluded.leaves
"""
# The actions placed by these members' places: theirs, and the one each may have joined with.
ACTIONS_OF = """
SELECT action_id FROM rpt_actions WHERE member_id = ANY(CAST(:ids AS varchar[]))
UNION SELECT substr(source, 8) FROM rpt_members
WHERE member_id = ANY(CAST(:ids AS varchar[])) AND left(source, 7) = 'action:'
"""

# Keys at nothing once a batch moved its members away are dropped, so the tallies hold what a recount of everyone
# would (`rebuild-reporting` compares them row by row).
EMPTIED = """
RETURNING scope_type, scope_id, kind, key, week, joins = 0 AND leaves = 0 AS empty
"""
DROP_EMPTIED = """
DELETE FROM rpt_tallies t USING unnest(CAST(:scope_types AS varchar[]), CAST(:scope_ids AS varchar[]),
  CAST(:kinds AS varchar[]), CAST(:keys AS varchar[]), CAST(:weeks AS date[]))
  AS e(scope_type, scope_id, kind, key, week)
WHERE t.scope_type = e.scope_type AND t.scope_id = e.scope_id AND t.kind = e.kind AND t.key = e.key
  AND t.week = e.week AND t.joins = 0 AND t.leaves = 0
"""

# The units of a batch whose parent changes (a new unit had none before), and the members of those: their regions
# move.
MOVED_UNITS = """
SELECT e.unit_id FROM unnest(CAST(:units AS varchar[]), CAST(:parents AS varchar[])) AS e(unit_id, parent_id)
LEFT JOIN rpt_units u ON u.unit_id = e.unit_id WHERE u.unit_id IS NULL OR u.parent_id IS DISTINCT FROM e.parent_id
"""
MEMBERS_OF = "SELECT member_id FROM rpt_members WHERE group_ids && CAST(:units AS varchar[])"

# One batch at a time changes the tallies (in this schema): the hot keys (this week's totals) would serialise the
# batches anyway, and members moved by a unit's new parent are then never counted by two batches at once.
LOCK = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.rpt_tallies'))"


async def recount(session: AsyncSession, ids: Sequence[str] | None, sign: int, *,
                  statement: str = CONTRIBUTIONS) -> list[Any]:
    """Add (`sign` 1) or take away (-1) what these members (everyone: None) count for, from their current rows;
    with `statement=ACTION_CONTRIBUTIONS`, these actions. Returns the keys a subtraction left at nothing."""
    params = {"ids": None if ids is None else list(ids), "sign": sign}
    if sign > 0:
        await session.execute(text(statement), params)
        return []
    return [r for r in (await session.execute(text(statement + EMPTIED), params)).all() if r.empty]


async def recount_everyone(session: AsyncSession) -> None:
    """Every member's and every action's contributions, into empty tallies."""
    await recount(session, None, 1)
    await recount(session, None, 1, statement=ACTION_CONTRIBUTIONS)


async def drop_emptied(session: AsyncSession, keys: Sequence[Any]) -> None:
    if keys:
        await session.execute(text(DROP_EMPTIED), {
            "scope_types": [k.scope_type for k in keys], "scope_ids": [k.scope_id for k in keys],
            "kinds": [k.kind for k in keys], "keys": [k.key for k in keys], "weeks": [k.week for k in keys]})


async def touched(session: AsyncSession, events: Sequence[tuple[Any, type[Any], Any]]) -> list[str]:
    """The members whose contributions these events may change, in a fixed order."""
    ids = {getattr(data, MEMBER_EVENTS[model]) for _, model, data in events if model in MEMBER_EVENTS}
    units = [(data.unit_id, data.parent_id) for _, model, data in events if model in UNIT_EVENTS]
    if units:
        moved = list((await session.execute(text(MOVED_UNITS), {
            "units": [u for u, _ in units], "parents": [p for _, p in units]})).scalars())
        if moved:
            ids.update((await session.execute(text(MEMBERS_OF), {"units": moved})).scalars())
    return sorted(ids)


async def placed(session: AsyncSession, events: Sequence[tuple[Any, type[Any], Any]],
                 members: Sequence[str]) -> list[str]:
    """The actions whose places these events may change: their own, those of the members they touch, and those the
    members joining with an action joined with."""
    ids = {getattr(data, ACTION_EVENTS[model]) for _, model, data in events if model in ACTION_EVENTS}
    ids.update(data.source[len("action:"):] for _, model, data in events
               if model is ev.MemberJoined and (data.source or "").startswith("action:"))
    if members:
        ids.update((await session.execute(text(ACTIONS_OF), {"ids": list(members)})).scalars())
    return sorted(ids)


def counts(events: Sequence[tuple[Any, type[Any], Any]]) -> bool:
    return any(model in MEMBER_EVENTS or model in UNIT_EVENTS or model in ACTION_EVENTS for _, model, _ in events)


@asynccontextmanager
async def kept_up(session: AsyncSession, events: Sequence[tuple[Any, type[Any], Any]]) -> AsyncIterator[None]:
    """Around projecting `events` [(envelope, model, data)]: the tallies follow what the projection changes."""
    if not counts(events):
        yield
        return
    await session.execute(text(LOCK))
    ids = await touched(session, events)
    actions = await placed(session, events, ids)
    emptied = await recount(session, ids, -1) if ids else []
    if actions:
        emptied += await recount(session, actions, -1, statement=ACTION_CONTRIBUTIONS)
    yield
    if ids:
        await recount(session, ids, 1)
    if actions:
        await recount(session, actions, 1, statement=ACTION_CONTRIBUTIONS)
    await drop_emptied(session, emptied)
