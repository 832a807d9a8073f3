"""Network reporting's read model, built only from events: the projection the consumer group `campaigns.reporting`
runs (one event at a time, or a batch at once), and the same projection on rows in memory for `rebuild-reporting`.

The projection stores facts, and the dashboard's member figures as tallies kept from those facts (tallies.py):
the same events give the same numbers in whatever order the topics were interleaved (live, or replayed by
`rebuild-reporting`). Within a topic
a subject's events keep their order, which is all the projection relies on. Every statement names tables without
a schema, so a rebuild can run it against a shadow schema through `search_path`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import db as tables
from services.campaigns import tallies
from services.campaigns.domain import place_changes
from shared import topics
from shared.events import catalog as ev
from shared.events.envelope import Envelope, EventData
from shared.handlers import Handler
from shared.uow import UnitOfWork

REPORTING_TOPICS: tuple[str, ...] = (
    topics.MEMBERSHIP_MEMBERS,
    topics.MEMBERSHIP_ORGANISATION,
    topics.EVENTS_MEETINGS,
    topics.EVENTS_RSVPS,
    topics.CAMPAIGNS_CAMPAIGNS,
    topics.CAMPAIGNS_ACTIONS,
    topics.CAMPAIGNS_ENGAGEMENT,
)


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
    keep_earliest: tuple[str, ...] = ()  # columns an upsert never moves later (a rejoin keeps the first join date)

    def statement(self, columns: tuple[str, ...]) -> Any:
        """The INSERT of one row of these columns; executed with many rows (distinct keys) it has the same effect
        as writing each in turn. Built once per projection and column set, so SQLAlchemy compiles it once."""
        key = (self, columns)
        if key not in _STATEMENTS:
            stmt = pg_insert(self.table)
            _STATEMENTS[key] = (
                stmt.on_conflict_do_update(index_elements=[self.table.c[self.key]],
                                           set_={c: func.least(self.table.c[c], stmt.excluded[c])
                                                 if c in self.keep_earliest else stmt.excluded[c]
                                                 for c in columns if c != self.key})
                if self.upsert else stmt.on_conflict_do_nothing()
            )
        return _STATEMENTS[key]

    async def write(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        await session.execute(self.statement(tuple(rows[0])), rows)

    def projector(self) -> Handler:
        async def project(uow: UnitOfWork, envelope: Envelope, e: Any) -> None:
            await self.write(uow.session, [self.row(envelope, e)])

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
    # Membership keeps a member's first join date when they come back; so do the figures ("joined this week").
    ev.MemberJoined: RowProjection(tables.rpt_members, "member_id", _member_row, keep_earliest=("joined_at",)),
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
    """The columns of a member's row that a profile update changes: its places, and its partner organisation."""
    values = place_changes(e)
    if {"organisation_id", "organisation"} & set(e.changed):
        values["organisation_id"] = e.organisation_id
    return values


async def member_profile_updated(uow: UnitOfWork, envelope: Envelope, e: ev.MemberProfileUpdated) -> None:
    m = tables.rpt_members
    values = _profile_changes(e)
    if values:
        await uow.session.execute(update(m).where(m.c.member_id == e.member_id).values(**values))


async def member_left(uow: UnitOfWork, envelope: Envelope, e: ev.MemberLeft) -> None:
    m = tables.rpt_members
    await uow.session.execute(update(m).where(m.c.member_id == e.member_id, m.c.status == "active")
                          .values(status="left", left_at=envelope.occurred_at))


async def member_erased(uow: UnitOfWork, envelope: Envelope, e: ev.MemberErased) -> None:
    """Counted as having left; the row holds no personal data (ids and places only), so it stays for the totals."""
    m = tables.rpt_members
    await uow.session.execute(update(m).where(m.c.member_id == e.member_id)
                          .values(status="erased", left_at=func.coalesce(m.c.left_at, e.erased_at)))


async def meeting_cancelled(uow: UnitOfWork, envelope: Envelope, e: ev.MeetingCancelled) -> None:
    m = tables.rpt_meetings
    await uow.session.execute(update(m).where(m.c.meeting_id == e.meeting_id).values(status="cancelled"))


async def rsvp_cancelled(uow: UnitOfWork, envelope: Envelope, e: ev.RsvpCancelled) -> None:
    r = tables.rpt_rsvps
    await uow.session.execute(update(r).where(r.c.rsvp_id == e.rsvp_id).values(status="cancelled"))


async def promoted(uow: UnitOfWork, envelope: Envelope, e: ev.PromotedFromWaitlist) -> None:
    r = tables.rpt_rsvps
    await uow.session.execute(update(r).where(r.c.rsvp_id == e.rsvp_id).values(status="going"))


async def attendance_recorded(uow: UnitOfWork, envelope: Envelope, e: ev.AttendanceRecorded) -> None:
    r = tables.rpt_rsvps
    values: dict[str, Any] = {"attended_at": e.attended_at}
    if e.member_id:
        values["member_id"] = e.member_id
    await uow.session.execute(update(r).where(r.c.rsvp_id == e.rsvp_id).values(**values))


def _action_linked(envelope: Envelope, e: ev.ActionLinkedToMember) -> dict[str, Any]:
    return {"member_id": e.member_id, "region_id": e.region_id, "group_id": e.group_id}


async def action_linked(uow: UnitOfWork, envelope: Envelope, e: ev.ActionLinkedToMember) -> None:
    """An action taken with a member's address before campaigns knew them counts for the member from now on."""
    a = tables.rpt_actions
    await uow.session.execute(update(a).where(a.c.action_id == e.action_id).values(**_action_linked(envelope, e)))


async def rsvp_linked(uow: UnitOfWork, envelope: Envelope, e: ev.RsvpLinkedToMember) -> None:
    r = tables.rpt_rsvps
    await uow.session.execute(update(r).where(r.c.rsvp_id == e.rsvp_id).values(member_id=e.member_id))


async def campaign_closed(uow: UnitOfWork, envelope: Envelope, e: ev.CampaignClosed) -> None:
    c = tables.rpt_campaigns
    await uow.session.execute(update(c).where(c.c.campaign_id == e.campaign_id).values(closed_at=e.closed_at))


def _tallied(model: type[EventData], handler: Handler) -> Handler:
    """The handler of an event that changes what a member or an action counts for, keeping the dashboard's
    tallies."""
    if not tallies.counts([(None, model, None)]):
        return handler

    async def project(uow: UnitOfWork, envelope: Envelope, e: Any) -> None:
        async with tallies.kept_up(uow.session, [(envelope, model, e)]):
            await handler(uow, envelope, e)

    return project


_PROJECTION: dict[type[EventData], Handler] = {
    **{model: rows.projector() for model, rows in ROW_PROJECTIONS.items()},
    ev.MemberProfileUpdated: member_profile_updated,
    ev.MemberLeft: member_left,
    ev.MemberErased: member_erased,
    ev.MeetingCancelled: meeting_cancelled,
    ev.RsvpCancelled: rsvp_cancelled,
    ev.PromotedFromWaitlist: promoted,
    ev.AttendanceRecorded: attendance_recorded,
    ev.CampaignClosed: campaign_closed,
    ev.ActionLinkedToMember: action_linked,
    ev.RsvpLinkedToMember: rsvp_linked,
}
PROJECTION: dict[type[EventData], Handler] = {model: _tallied(model, fn) for model, fn in _PROJECTION.items()}
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
    ev.ActionLinkedToMember: lambda e: ("rpt_actions", e.action_id),
    ev.RsvpLinkedToMember: lambda e: ("rpt_rsvps", e.rsvp_id),
}


async def project_batch(uow: UnitOfWork, events: Sequence[tuple[Envelope, Any, Any]]) -> None:
    """Project claimed events `[(envelope, model, data)]` in their order with few statements: the rows that facts
    (joins, actions, RSVPs ...) write go in one INSERT per table (a statement compiled once, executed with all the
    rows). Same effect as projecting them one by one: an updating event (a member leaving) runs on its own, after
    the pending rows when it changes one of them. Used by the live consumer and by `rebuild-reporting`."""
    async with tallies.kept_up(uow.session, events):
        await _project_batch(uow, events)


async def _project_batch(uow: UnitOfWork, events: Sequence[tuple[Envelope, Any, Any]]) -> None:
    pending: dict[RowProjection, dict[Any, dict[str, Any]]] = {}
    written: set[tuple[str, Any]] = set()  # (table, key) of the pending rows

    async def flush() -> None:
        for rows_of, rows in pending.items():
            await rows_of.write(uow.session, list(rows.values()))
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
        await _PROJECTION[model](uow, envelope, data)
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
    ev.ActionLinkedToMember: _setter("rpt_actions", lambda e: e.action_id, _action_linked),
    ev.RsvpLinkedToMember: _setter("rpt_rsvps", lambda e: e.rsvp_id, lambda _, e: {"member_id": e.member_id}),
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
