"""Network reporting: a read model built only from events (consumer group `campaigns.reporting`), and the figures
the organisers' dashboard shows from it.

The projection stores facts, not totals: every figure is computed when asked, so the same events give the same
numbers in whatever order the topics were interleaved (live, or replayed by `rebuild-reporting`). Within a topic
a subject's events keep their order, which is all the projection relies on. Every statement names tables without
a schema, so a rebuild can run it against a shadow schema through `search_path`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import db as tables
from services.campaigns.domain import ASK_KIND_LABELS, LadderRung
from shared import topics
from shared.auth import OrganiserScope
from shared.events import catalog as ev
from shared.events.envelope import Envelope, EventData

REPORTING_TOPICS: tuple[str, ...] = (
    topics.MEMBERSHIP_MEMBERS,
    topics.MEMBERSHIP_ORGANISATION,
    topics.EVENTS_MEETINGS,
    topics.EVENTS_RSVPS,
    topics.CAMPAIGNS_CAMPAIGNS,
    topics.CAMPAIGNS_ACTIONS,
    topics.CAMPAIGNS_ENGAGEMENT,
)
Projector = Callable[[Envelope, Any, AsyncSession], Awaitable[None]]


# The projection ----------------------------------------------------------------------------------------
# Most events state a fact that becomes one row: the row is computed by a function of the event, written by the
# live consumer one event at a time and by `rebuild-reporting` many rows to a statement (`RowProjection`). The
# other events update a row that such a fact wrote (`TOUCHES` names that row, so a batch keeps their order).
@dataclass(frozen=True)
class RowProjection:
    """An event that writes one row of `table`: replacing the row with its key (upsert) or kept if it exists."""

    table: Table
    key: str
    row: Callable[[Envelope, Any], dict[str, Any]]
    upsert: bool = True

    def statement(self, columns: tuple[str, ...]) -> Any:
        """The INSERT of one row of these columns; executed with many rows (distinct keys) it has the same effect
        as writing each in turn. Built once per projection and column set, so SQLAlchemy compiles it once."""
        key = (self, columns)
        if key not in _STATEMENTS:
            stmt = pg_insert(self.table)
            _STATEMENTS[key] = (
                stmt.on_conflict_do_update(index_elements=[self.table.c[self.key]],
                                           set_={c: stmt.excluded[c] for c in columns if c != self.key})
                if self.upsert else stmt.on_conflict_do_nothing()
            )
        return _STATEMENTS[key]

    async def write(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        await session.execute(self.statement(tuple(rows[0])), rows)

    def projector(self) -> Projector:
        async def project(envelope: Envelope, e: Any, session: AsyncSession) -> None:
            await self.write(session, [self.row(envelope, e)])

        return project


_STATEMENTS: dict[tuple[RowProjection, tuple[str, ...]], Any] = {}


def _member_row(envelope: Envelope, e: ev.MemberJoined) -> dict[str, Any]:
    return {"member_id": e.member_id, "region_id": e.region_id, "group_ids": e.group_ids,
            "subteam_ids": e.subteam_ids, "organisation_id": e.organisation_id, "source": e.source,
            "joined_at": e.joined_at, "left_at": None, "status": "active"}


def _unit_row(envelope: Envelope, e: ev.OrganisationUnitDefined) -> dict[str, Any]:
    return {"unit_id": e.unit_id, "kind": e.kind, "name": e.name, "parent_id": e.parent_id}


def _meeting_row(envelope: Envelope, e: ev.MeetingScheduled) -> dict[str, Any]:
    return {"meeting_id": e.meeting_id, "title": e.title, "scope_type": e.scope_type, "scope_id": e.scope_id,
            "campaign_id": e.campaign_id, "starts_at": e.starts_at, "status": "scheduled"}


def _rsvp_row(envelope: Envelope, e: ev.RsvpReceived) -> dict[str, Any]:
    return {"rsvp_id": e.rsvp_id, "meeting_id": e.meeting_id, "member_id": e.member_id, "status": e.status,
            "attended_at": None}


def _campaign_row(envelope: Envelope, e: ev.CampaignLaunched) -> dict[str, Any]:
    return {"campaign_id": e.campaign_id, "title": e.title, "scope_type": e.scope_type, "scope_id": e.scope_id,
            "partner_ids": e.partner_ids, "launched_at": envelope.occurred_at}


def _ask_row(envelope: Envelope, e: ev.AskPublished) -> dict[str, Any]:
    return {"ask_id": e.ask_id, "campaign_id": e.campaign_id, "kind": e.kind, "title": e.title}


def _action_row(envelope: Envelope, e: ev.ActionTaken) -> dict[str, Any]:
    return {"action_id": e.action_id, "ask_id": e.ask_id, "campaign_id": e.campaign_id, "kind": e.kind,
            "member_id": e.member_id, "region_id": e.region_id, "group_id": e.group_id,
            "join_network": e.join_network, "taken_at": e.taken_at}


def _level_row(envelope: Envelope, e: ev.EngagementLevelChanged) -> dict[str, Any]:
    return {"member_id": e.member_id, "level": e.level, "changed_at": envelope.occurred_at}


MEETING_ROWS = RowProjection(tables.rpt_meetings, "meeting_id", _meeting_row)
ROW_PROJECTIONS: dict[type[EventData], RowProjection] = {
    ev.MemberJoined: RowProjection(tables.rpt_members, "member_id", _member_row),
    ev.OrganisationUnitDefined: RowProjection(tables.rpt_units, "unit_id", _unit_row),
    ev.MeetingScheduled: MEETING_ROWS,
    ev.MeetingUpdated: MEETING_ROWS,
    ev.RsvpReceived: RowProjection(tables.rpt_rsvps, "rsvp_id", _rsvp_row),
    ev.CampaignLaunched: RowProjection(tables.rpt_campaigns, "campaign_id", _campaign_row),
    ev.AskPublished: RowProjection(tables.rpt_asks, "ask_id", _ask_row),
    ev.ActionTaken: RowProjection(tables.rpt_actions, "action_id", _action_row, upsert=False),
    ev.EngagementLevelChanged: RowProjection(tables.rpt_levels, "member_id", _level_row),
}


def _profile_changes(e: ev.MemberProfileUpdated) -> dict[str, Any]:
    """The columns of a member's row that a profile update changes."""
    values: dict[str, Any] = {}
    changed = set(e.changed)
    if {"region_id", "region"} & changed:
        values["region_id"] = e.region_id
    if {"group_ids", "groups"} & changed:
        values["group_ids"] = e.group_ids
    if {"subteam_ids", "subteams"} & changed:
        values["subteam_ids"] = e.subteam_ids
    if {"organisation_id", "organisation"} & changed:
        values["organisation_id"] = e.organisation_id
    return values


async def member_profile_updated(envelope: Envelope, e: ev.MemberProfileUpdated, session: AsyncSession) -> None:
    m = tables.rpt_members
    values = _profile_changes(e)
    if values:
        await session.execute(update(m).where(m.c.member_id == e.member_id).values(**values))


async def member_left(envelope: Envelope, e: ev.MemberLeft, session: AsyncSession) -> None:
    m = tables.rpt_members
    await session.execute(update(m).where(m.c.member_id == e.member_id, m.c.status == "active")
                          .values(status="left", left_at=envelope.occurred_at))


async def member_erased(envelope: Envelope, e: ev.MemberErased, session: AsyncSession) -> None:
    """Counted as having left; the row holds no personal data (ids and places only), so it stays for the totals."""
    m = tables.rpt_members
    await session.execute(update(m).where(m.c.member_id == e.member_id)
                          .values(status="erased", left_at=func.coalesce(m.c.left_at, e.erased_at)))


async def meeting_cancelled(envelope: Envelope, e: ev.MeetingCancelled, session: AsyncSession) -> None:
    m = tables.rpt_meetings
    await session.execute(update(m).where(m.c.meeting_id == e.meeting_id).values(status="cancelled"))


async def rsvp_cancelled(envelope: Envelope, e: ev.RsvpCancelled, session: AsyncSession) -> None:
    r = tables.rpt_rsvps
    await session.execute(update(r).where(r.c.rsvp_id == e.rsvp_id).values(status="cancelled"))


async def promoted(envelope: Envelope, e: ev.PromotedFromWaitlist, session: AsyncSession) -> None:
    r = tables.rpt_rsvps
    await session.execute(update(r).where(r.c.rsvp_id == e.rsvp_id).values(status="going"))


async def attendance_recorded(envelope: Envelope, e: ev.AttendanceRecorded, session: AsyncSession) -> None:
    r = tables.rpt_rsvps
    values: dict[str, Any] = {"attended_at": e.attended_at}
    if e.member_id:
        values["member_id"] = e.member_id
    await session.execute(update(r).where(r.c.rsvp_id == e.rsvp_id).values(**values))


async def campaign_closed(envelope: Envelope, e: ev.CampaignClosed, session: AsyncSession) -> None:
    c = tables.rpt_campaigns
    await session.execute(update(c).where(c.c.campaign_id == e.campaign_id).values(closed_at=e.closed_at))


PROJECTION: dict[type[EventData], Projector] = {
    **{model: rows.projector() for model, rows in ROW_PROJECTIONS.items()},
    ev.MemberProfileUpdated: member_profile_updated,
    ev.MemberLeft: member_left,
    ev.MemberErased: member_erased,
    ev.MeetingCancelled: meeting_cancelled,
    ev.RsvpCancelled: rsvp_cancelled,
    ev.PromotedFromWaitlist: promoted,
    ev.AttendanceRecorded: attendance_recorded,
    ev.CampaignClosed: campaign_closed,
}
PROJECTED_TYPES = {model.event_type: (model, fn) for model, fn in PROJECTION.items()}
# The row each updating event changes, as (table name, key).
TOUCHES: dict[type[EventData], Callable[[Any], tuple[str, str]]] = {
    ev.MemberProfileUpdated: lambda e: ("rpt_members", e.member_id),
    ev.MemberLeft: lambda e: ("rpt_members", e.member_id),
    ev.MemberErased: lambda e: ("rpt_members", e.member_id),
    ev.MeetingCancelled: lambda e: ("rpt_meetings", e.meeting_id),
    ev.RsvpCancelled: lambda e: ("rpt_rsvps", e.rsvp_id),
    ev.PromotedFromWaitlist: lambda e: ("rpt_rsvps", e.rsvp_id),
    ev.AttendanceRecorded: lambda e: ("rpt_rsvps", e.rsvp_id),
    ev.CampaignClosed: lambda e: ("rpt_campaigns", e.campaign_id),
}


async def project_batch(session: AsyncSession, events: Sequence[tuple[Envelope, Any, Any]]) -> None:
    """Project claimed events `[(envelope, model, data)]` in their order with few statements: the rows that facts
    (joins, actions, RSVPs ...) write go in one INSERT per table (a statement compiled once, executed with all the
    rows). Same effect as projecting them one by one: an updating event (a member leaving) runs on its own, after
    the pending rows when it changes one of them. Used by the live consumer and by `rebuild-reporting`."""
    pending: dict[RowProjection, dict[Any, dict[str, Any]]] = {}
    written: set[tuple[str, Any]] = set()  # (table, key) of the pending rows

    async def flush() -> None:
        for rows_of, rows in pending.items():
            await rows_of.write(session, list(rows.values()))
        pending.clear()
        written.clear()

    for envelope, model, data in events:
        rows_of = ROW_PROJECTIONS.get(model)
        if rows_of is not None:
            row = rows_of.row(envelope, data)
            rows = pending.setdefault(rows_of, {})
            if rows_of.upsert or row[rows_of.key] not in rows:
                rows[row[rows_of.key]] = row  # as in turn: the last upsert wins, the first insert stays
            written.add((rows_of.table.name, row[rows_of.key]))
            continue
        touches = TOUCHES.get(model)
        if touches is None or touches(data) in written:
            await flush()
        await PROJECTION[model](envelope, data, session)
    await flush()


# The same projection on rows held in memory ------------------------------------------------------------------
# `rebuild-reporting` replays the whole history into an empty shadow this way, then writes every row once (COPY):
# `rows[table name][key]` is the row the database would hold after the same events, one by one, in the same order.
MemoryRows = dict[str, dict[Any, dict[str, Any]]]
MemoryUpdate = Callable[[Envelope, Any, MemoryRows], None]


def memory_rows() -> MemoryRows:
    return {t.name: {} for t in tables.REPORTING_TABLES if t is not tables.rpt_inbox}


def _blank(table: Table) -> dict[str, Any]:
    """A new row's columns before the fact's own: NULL where the column has no default (as an INSERT leaves it)."""
    return {c.name: None for c in table.columns if c.server_default is None}


_BLANK: dict[str, dict[str, Any]] = {t.name: _blank(t) for t in tables.REPORTING_TABLES}
_COLUMNS: dict[str, int] = {t.name: len(t.columns) for t in tables.REPORTING_TABLES}


def _member_profile_updated_in_memory(envelope: Envelope, e: ev.MemberProfileUpdated, rows: MemoryRows) -> None:
    row = rows["rpt_members"].get(e.member_id)
    if row is not None:
        row.update(_profile_changes(e))


def _member_left_in_memory(envelope: Envelope, e: ev.MemberLeft, rows: MemoryRows) -> None:
    row = rows["rpt_members"].get(e.member_id)
    if row is not None and row["status"] == "active":
        row["status"], row["left_at"] = "left", envelope.occurred_at


def _member_erased_in_memory(envelope: Envelope, e: ev.MemberErased, rows: MemoryRows) -> None:
    row = rows["rpt_members"].get(e.member_id)
    if row is not None:
        row["status"] = "erased"
        if row["left_at"] is None:
            row["left_at"] = e.erased_at


def _setter(table: str, key: Callable[[Any], Any], values: Callable[[Envelope, Any], dict[str, Any]]) -> MemoryUpdate:
    def update_row(envelope: Envelope, e: Any, rows: MemoryRows) -> None:
        row = rows[table].get(key(e))
        if row is not None:
            row.update(values(envelope, e))

    return update_row


def _attended(envelope: Envelope, e: ev.AttendanceRecorded) -> dict[str, Any]:
    return {"attended_at": e.attended_at, **({"member_id": e.member_id} if e.member_id else {})}


# Each updating event of PROJECTION, on a row in memory: what its UPDATE does to the row it matches.
UPDATES_IN_MEMORY: dict[type[EventData], MemoryUpdate] = {
    ev.MemberProfileUpdated: _member_profile_updated_in_memory,
    ev.MemberLeft: _member_left_in_memory,
    ev.MemberErased: _member_erased_in_memory,
    ev.MeetingCancelled: _setter("rpt_meetings", lambda e: e.meeting_id, lambda _, e: {"status": "cancelled"}),
    ev.RsvpCancelled: _setter("rpt_rsvps", lambda e: e.rsvp_id, lambda _, e: {"status": "cancelled"}),
    ev.PromotedFromWaitlist: _setter("rpt_rsvps", lambda e: e.rsvp_id, lambda _, e: {"status": "going"}),
    ev.AttendanceRecorded: _setter("rpt_rsvps", lambda e: e.rsvp_id, _attended),
    ev.CampaignClosed: _setter("rpt_campaigns", lambda e: e.campaign_id, lambda _, e: {"closed_at": e.closed_at}),
}


def project_in_memory(rows: MemoryRows, envelope: Envelope, model: type[EventData], data: Any) -> None:
    """One claimed event on `rows`, with the effect its projection has on the database's rows."""
    rows_of = ROW_PROJECTIONS.get(model)
    if rows_of is None:
        UPDATES_IN_MEMORY[model](envelope, data, rows)
        return
    row = rows_of.row(envelope, data)
    table = rows_of.table.name
    held = rows[table]
    key = row[rows_of.key]
    existing = held.get(key)
    if existing is None:
        new = {**_BLANK[table], **row}
        if len(new) != _COLUMNS[table]:  # a column the database would fill with its default: not modelled here
            raise ValueError(f"{table}: a new row without {set(c.name for c in rows_of.table.columns) - set(new)}")
        held[key] = new
    elif rows_of.upsert:
        existing.update(row)  # ON CONFLICT DO UPDATE of the row's columns; the others keep their values


# The figures ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scope:
    """Whose figures: the whole network, or one region, group or sub-team (and everything under it)."""

    scope_type: str = "network"
    scope_id: str | None = None

    @classmethod
    def of(cls, organiser: OrganiserScope) -> Scope:
        return cls(organiser.scope_type, organiser.scope_id)

    @property
    def network(self) -> bool:
        return self.scope_type == "network" or self.scope_id is None

    def members(self, alias: str) -> str:
        if self.network:
            return "TRUE"
        column = {"region": "region_id = :sid", "group": ":sid = ANY({a}.group_ids)",
                  "subteam": ":sid = ANY({a}.subteam_ids)"}[self.scope_type]
        return ("{a}." + column if self.scope_type == "region" else column).format(a=alias)

    def actions(self, alias: str) -> str:
        if self.network:
            return "TRUE"
        return {"region": f"{alias}.place_region = :sid", "group": f":sid = ANY({alias}.place_groups)",
                "subteam": f":sid = ANY({alias}.place_subteams)"}[self.scope_type]

    def scoped(self, alias: str) -> str:
        """Something with its own scope (a meeting, a campaign) that lies within this one."""
        if self.network:
            return "TRUE"
        below = ("SELECT unit_id FROM rpt_units WHERE parent_id = :sid OR parent_id IN "
                 "(SELECT unit_id FROM rpt_units WHERE parent_id = :sid)")
        return f"({alias}.scope_id = :sid OR {alias}.scope_id IN ({below}))"

    def params(self) -> dict[str, Any]:
        return {} if self.network else {"sid": self.scope_id}


PLACED_ACTIONS = """
WITH placed AS (
  SELECT a.*,
         coalesce(a.region_id, m1.region_id, m2.region_id) AS place_region,
         coalesce(m1.group_ids, m2.group_ids,
                  CASE WHEN a.group_id IS NULL THEN '{}'::varchar[] ELSE ARRAY[a.group_id]::varchar[] END)
           AS place_groups,
         coalesce(m1.subteam_ids, m2.subteam_ids, '{}'::varchar[]) AS place_subteams
  FROM rpt_actions a
  LEFT JOIN rpt_members m1 ON m1.member_id = a.member_id
  LEFT JOIN rpt_members m2 ON a.member_id IS NULL AND m2.source = 'action:' || a.action_id
)
"""


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


class Reports:
    """The dashboard's figures, each computed from the read model for one scope."""

    def __init__(self, ladder: Sequence[LadderRung]) -> None:
        self.ladder = tuple(ladder)

    async def names(self, session: AsyncSession) -> dict[str, str]:
        return dict((await session.execute(text("SELECT unit_id, name FROM rpt_units"))).all())

    async def growth(self, session: AsyncSession, scope: Scope, *, weeks: int = 12,
                     today: date | None = None) -> dict[str, Any]:
        """Members per place (regions for the network, groups for a region) at the end of each of the last weeks."""
        today = today or datetime.now(UTC).date()
        starts = [week_start(today) - timedelta(weeks=weeks - 1 - i) for i in range(weeks)]
        ends = [datetime.combine(s + timedelta(days=7), datetime.min.time(), UTC) for s in starts]
        begins = [datetime.combine(s, datetime.min.time(), UTC) for s in starts]
        rows = (await session.execute(text(
            f"SELECT m.region_id, m.group_ids, m.joined_at, m.left_at FROM rpt_members m WHERE {scope.members('m')}"
        ), scope.params())).all()
        names = await self.names(session)
        by_groups = not scope.network
        series: dict[str, dict[str, Any]] = {}
        for r in rows:
            places = ([g for g in r.group_ids] or [None]) if by_groups else [r.region_id]
            if scope.scope_type == "group":
                places = [scope.scope_id]
            for place in places:
                key = place or ""
                s = series.setdefault(key, {"id": place, "name": names.get(place or "", place or
                                            ("No group" if by_groups else "No region")),
                                            "members": [0] * weeks, "joined": [0] * weeks})
                for i in range(weeks):
                    if r.joined_at < ends[i] and (r.left_at is None or r.left_at >= ends[i]):
                        s["members"][i] += 1
                    if begins[i] <= r.joined_at < ends[i]:
                        s["joined"][i] += 1
        ordered = sorted(series.values(), key=lambda s: (-s["members"][-1], s["name"], s["id"] or ""))
        # A member in two groups counts in both groups' series, but once in the scope's totals.
        totals = {
            "members": [sum(1 for r in rows if r.joined_at < ends[i] and (r.left_at is None or r.left_at >= ends[i]))
                        for i in range(weeks)],
            "joined": [sum(1 for r in rows if begins[i] <= r.joined_at < ends[i]) for i in range(weeks)],
        }
        return {"weeks": [s.isoformat() for s in starts], "place_kind": "group" if by_groups else "region",
                "series": ordered, "totals": totals}

    async def funnel(self, session: AsyncSession, scope: Scope) -> list[dict[str, Any]]:
        """Active members at each level of the ladder or above (everyone is at the first)."""
        base = self.ladder[0].level
        rows = (await session.execute(text(
            "SELECT coalesce(l.level, :base) AS level, count(*) AS n FROM rpt_members m "
            f"LEFT JOIN rpt_levels l ON l.member_id = m.member_id WHERE m.status = 'active' AND {scope.members('m')} "
            "GROUP BY 1"
        ), {"base": base, **scope.params()})).all()
        rank = {r.level: i for i, r in enumerate(self.ladder)}
        at = [0] * len(self.ladder)
        for level, n in rows:
            at[rank.get(level, 0)] += n
        return [{"level": r.level, "label": r.label, "members": sum(at[i:]), "at_level": at[i]}
                for i, r in enumerate(self.ladder)]

    async def attendance(self, session: AsyncSession, scope: Scope, *, limit: int = 200) -> dict[str, Any]:
        """Per meeting that has started: places taken and people who came; the rate overall."""
        rows = (await session.execute(text(
            "SELECT mt.meeting_id, mt.title, mt.starts_at, "
            "count(r.rsvp_id) FILTER (WHERE r.status = 'going') AS going, count(r.attended_at) AS attended "
            "FROM rpt_meetings mt LEFT JOIN rpt_rsvps r ON r.meeting_id = mt.meeting_id "
            f"WHERE mt.status = 'scheduled' AND mt.starts_at <= now() AND {scope.scoped('mt')} "
            "GROUP BY mt.meeting_id, mt.title, mt.starts_at ORDER BY mt.starts_at DESC, mt.meeting_id LIMIT :limit"
        ), {"limit": limit, **scope.params()})).all()
        meetings = [{"meeting_id": r.meeting_id, "title": r.title, "starts_at": r.starts_at.isoformat(),
                     "going": r.going, "attended": r.attended,
                     "rate": round(r.attended / r.going, 3) if r.going else None} for r in rows]
        going, attended = sum(m["going"] for m in meetings), sum(m["attended"] for m in meetings)
        return {"meetings": meetings, "going": going, "attended": attended,
                "rate": round(attended / going, 3) if going else None}

    async def actions(self, session: AsyncSession, scope: Scope) -> list[dict[str, Any]]:
        """Actions per ask by people in scope: every ask of the campaigns they took part in or the scope runs."""
        counts = (await session.execute(text(
            PLACED_ACTIONS + "SELECT p.ask_id, count(*) AS n, count(*) FILTER (WHERE p.join_network) AS joined "
            f"FROM placed p WHERE {scope.actions('p')} GROUP BY p.ask_id"
        ), scope.params())).all()
        by_ask = {r.ask_id: (r.n, r.joined) for r in counts}
        asks = (await session.execute(text(
            "SELECT k.ask_id, k.kind, k.title, k.campaign_id, c.title AS campaign, "
            f"({scope.scoped('c')}) AS own FROM rpt_asks k LEFT JOIN rpt_campaigns c ON c.campaign_id = k.campaign_id"
        ), scope.params())).all()
        active = {a.campaign_id for a in asks if a.ask_id in by_ask}  # campaigns people in scope took part in
        out = [
            {"campaign_id": a.campaign_id, "campaign": a.campaign or a.campaign_id, "ask_id": a.ask_id,
             "ask": a.title, "kind": a.kind, "kind_label": ASK_KIND_LABELS.get(a.kind, a.kind),
             "actions": by_ask.get(a.ask_id, (0, 0))[0], "joined_network": by_ask.get(a.ask_id, (0, 0))[1]}
            for a in asks if a.campaign_id in active or (a.own and a.campaign is not None)
        ]
        return sorted(out, key=lambda r: (r["campaign"], r["campaign_id"], r["ask"], r["ask_id"]))

    async def partners(self, session: AsyncSession, scope: Scope) -> list[dict[str, Any]]:
        """Partner organisations: campaigns they are in (of those touching the scope), actions on those, members."""
        rows = (await session.execute(text(
            PLACED_ACTIONS + ", scoped AS (SELECT p.campaign_id, count(*) AS n FROM placed p "
            f"WHERE {scope.actions('p')} GROUP BY p.campaign_id) "
            "SELECT pid AS partner_id, count(DISTINCT c.campaign_id) AS campaigns, "
            "coalesce(sum(s.n), 0) AS actions FROM rpt_campaigns c CROSS JOIN LATERAL unnest(c.partner_ids) AS pid "
            f"LEFT JOIN scoped s ON s.campaign_id = c.campaign_id WHERE ({scope.scoped('c')}) OR s.n IS NOT NULL "
            "GROUP BY pid"
        ), scope.params())).all()
        members: dict[str, int] = dict((await session.execute(text(
            "SELECT m.organisation_id, count(*) FROM rpt_members m WHERE m.organisation_id IS NOT NULL "
            f"AND m.status = 'active' AND {scope.members('m')} GROUP BY 1"
        ), scope.params())).all())
        names = await self.names(session)
        ids = {r.partner_id for r in rows} | set(members)
        found = {r.partner_id: r for r in rows}
        out = [{"partner_id": pid, "name": names.get(pid, pid),
                "campaigns": found[pid].campaigns if pid in found else 0,
                "actions": int(found[pid].actions) if pid in found else 0, "members": members.get(pid, 0)}
               for pid in ids]
        return sorted(out, key=lambda r: (-r["campaigns"], -r["members"], r["name"], r["partner_id"]))

    async def headline(self, session: AsyncSession, scope: Scope) -> dict[str, Any]:
        row = (await session.execute(text(
            "SELECT count(*) FILTER (WHERE m.status = 'active') AS members, "
            "count(*) FILTER (WHERE m.joined_at >= now() - interval '30 days') AS joined_30d "
            f"FROM rpt_members m WHERE {scope.members('m')}"
        ), scope.params())).one()
        actions = (await session.execute(text(
            PLACED_ACTIONS + f"SELECT count(*) FROM placed p WHERE {scope.actions('p')}"), scope.params())).scalar_one()
        return {"members": row.members, "joined_30d": row.joined_30d, "actions": actions}

    async def snapshot(self, session: AsyncSession, scope: Scope, *, weeks: int = 12) -> dict[str, Any]:
        """Every figure for one scope: what the dashboard shows and the CSV export writes."""
        return {
            "scope": {"type": scope.scope_type, "id": scope.scope_id},
            "headline": await self.headline(session, scope),
            "growth": await self.growth(session, scope, weeks=weeks),
            "funnel": await self.funnel(session, scope),
            "attendance": await self.attendance(session, scope),
            "actions": await self.actions(session, scope),
            "partners": await self.partners(session, scope),
        }
