"""`rebuild-reporting` replays the history in bulk (rows projected in memory, written by COPY): the read model it
writes is the one the event-by-event projection writes, row for row, for a history with every kind of updating
event, duplicates, events that arrive before the row they change, and events the projection skips."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from services.campaigns import db as tables
from services.campaigns.rebuild import (
    BulkShadow,
    RebuildResult,
    _create_shadow,
    _drop_shadow,
    _swap,
    apply_batch,
    apply_records,
)
from shared.consumer import H_REPLAY_FOR_GROUP
from shared.db import Database
from shared.events import catalog as ev
from shared.events.envelope import Envelope, EventData
from shared.outbox import Outbox
from shared.uow import UnitsOfWork
from tests.campaigns.conftest import joined

GROUP = "campaigns.reporting.bulk-test"
ONE_BY_ONE, BULK = "rpt_test_one_by_one", "rpt_test_bulk"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Record:
    """What the rebuild reads of a Kafka record."""

    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


def uid() -> str:
    return str(uuid.uuid4())


class History:
    """Events in the order they are read, each at its own time."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def add(self, data: EventData, **headers: str) -> Envelope:
        envelope = Envelope.wrap(data, occurred_at=T0 + timedelta(minutes=len(self.records)))
        return self.envelope(envelope, **headers)

    def envelope(self, envelope: Envelope, **headers: str) -> Envelope:
        self.raw(envelope.to_bytes(), **headers)
        return envelope

    def raw(self, value: bytes | None, **headers: str) -> None:
        self.records.append(Record(value, [(k, v.encode()) for k, v in headers.items()] or None))


def a_history_of_every_case() -> History:
    h = History()
    region, other_region, group = uid(), uid(), uid()
    h.add(ev.OrganisationUnitDefined(unit_id=region, kind="region", name="East Midlands"))
    h.add(ev.OrganisationUnitDefined(unit_id=other_region, kind="region", name="West Midlands"))
    h.add(ev.OrganisationUnitDefined(unit_id=group, kind="group", name="Leicester", parent_id=region))
    h.add(ev.OrganisationUnitDefined(unit_id=group, kind="group", name="Leicester City", parent_id=region))  # renamed

    moved, left, erased, erased_after_leaving, rejoined, early_leaver = (uid() for _ in range(6))
    for member in (moved, left, erased, erased_after_leaving, rejoined):
        h.add(joined(member, region, [group], joined_at=T0))
    h.add(ev.MemberProfileUpdated(member_id=moved, changed=["region_id", "groups"], region_id=other_region,
                                  group_ids=[]))
    h.add(ev.MemberProfileUpdated(member_id=moved, changed=["interests"], interests=["housing"]))  # no column
    h.add(ev.MemberProfileUpdated(member_id=uid(), changed=["region_id"], region_id=region))  # no such member
    h.add(ev.MemberLeft(member_id=left))
    h.add(ev.MemberLeft(member_id=left, reason="again"))  # no longer active: the first time stays
    h.add(ev.MemberErased(member_id=erased, erased_at=T0 + timedelta(days=3)))
    h.add(ev.MemberLeft(member_id=erased_after_leaving))
    h.add(ev.MemberErased(member_id=erased_after_leaving, erased_at=T0 + timedelta(days=4)))  # keeps left_at
    h.add(ev.MemberLeft(member_id=rejoined))
    h.add(joined(rejoined, other_region, [], joined_at=T0 + timedelta(days=5)))  # active again
    h.add(ev.MemberLeft(member_id=early_leaver))  # before the join it follows: changes nothing
    h.add(joined(early_leaver, region, [group], joined_at=T0))
    h.add(ev.MemberErased(member_id=uid(), erased_at=T0))  # no such member

    # What the dashboard's tallies follow: a group defined after its members joined, a group moved to another
    # region, a level before the join it follows, a partner organisation, sub-teams, a member in two groups, and
    # weeks apart.
    late, moving, subteam, partner = uid(), uid(), uid(), uid()
    early_joiner, mover_member, levelled, partnered = (uid() for _ in range(4))
    h.add(joined(early_joiner, None, [late], joined_at=T0 - timedelta(days=30)))
    h.add(ev.OrganisationUnitDefined(unit_id=late, kind="group", name="Late", parent_id=region))
    h.add(ev.OrganisationUnitDefined(unit_id=moving, kind="group", name="Moving", parent_id=region))
    h.add(joined(mover_member, region, [moving, group], subteam_ids=[subteam], joined_at=T0 - timedelta(days=9)))
    h.add(ev.OrganisationUnitDefined(unit_id=moving, kind="group", name="Moving", parent_id=other_region))
    h.add(ev.EngagementLevelChanged(member_id=levelled, level="participant"))
    h.add(joined(levelled, other_region, [moving], joined_at=T0 + timedelta(days=20)))
    h.add(joined(partnered, region, [], organisation_id=partner, joined_at=T0 - timedelta(days=60)))
    h.add(ev.MemberProfileUpdated(member_id=partnered, changed=["groups", "subteams"], group_ids=[late],
                                  subteam_ids=[subteam]))
    h.add(ev.MemberLeft(member_id=early_joiner))

    # The same event twice (redelivered), and another event that reuses its id: only the first counts.
    first = h.add(joined(uid(), region, [group], joined_at=T0))
    h.envelope(first)
    h.envelope(Envelope.wrap(joined(uid(), other_region, [], joined_at=T0)).model_copy(
        update={"event_id": first.event_id}))

    meeting, cancelled_then_updated, updated_first = uid(), uid(), uid()
    for m in (meeting, cancelled_then_updated):
        h.add(ev.MeetingScheduled(meeting_id=m, title="Planning", kind="in_person", scope_type="group",
                                  scope_id=group, starts_at=T0 - timedelta(days=1), ends_at=T0,
                                  public_url="http://localhost/m"))
    h.add(ev.MeetingUpdated(meeting_id=meeting, title="Planning (new room)", kind="in_person", scope_type="group",
                            scope_id=group, starts_at=T0 - timedelta(days=2), ends_at=T0,
                            public_url="http://localhost/m", changed=["title", "starts_at"]))
    h.add(ev.MeetingCancelled(meeting_id=cancelled_then_updated))
    h.add(ev.MeetingUpdated(meeting_id=cancelled_then_updated, title="Back on", kind="online", scope_type="region",
                            scope_id=region, starts_at=T0, ends_at=T0, public_url="http://localhost/m"))
    h.add(ev.MeetingUpdated(meeting_id=updated_first, title="Never scheduled", kind="online",  # no row yet
                            scope_type="network", starts_at=T0, ends_at=T0, public_url="http://localhost/m"))
    h.add(ev.MeetingCancelled(meeting_id=uid()))  # no such meeting

    going, waitlisted, walked_in, cancelled, attended_early = (uid() for _ in range(5))
    h.add(ev.RsvpReceived(meeting_id=meeting, rsvp_id=going, member_id=moved, status="going"))
    h.add(ev.RsvpReceived(meeting_id=meeting, rsvp_id=waitlisted, member_id=left, status="waitlisted"))
    h.add(ev.RsvpReceived(meeting_id=meeting, rsvp_id=walked_in, status="going"))
    h.add(ev.RsvpReceived(meeting_id=meeting, rsvp_id=cancelled, member_id=erased, status="going"))
    h.add(ev.PromotedFromWaitlist(meeting_id=meeting, rsvp_id=waitlisted))
    h.add(ev.RsvpCancelled(meeting_id=meeting, rsvp_id=cancelled))
    h.add(ev.AttendanceRecorded(meeting_id=meeting, rsvp_id=going, method="organiser", attended_at=T0))
    h.add(ev.AttendanceRecorded(meeting_id=meeting, rsvp_id=walked_in, member_id=rejoined, method="walk_in",
                                attended_at=T0))
    h.add(ev.AttendanceRecorded(meeting_id=meeting, rsvp_id=attended_early, method="self_check_in",
                                attended_at=T0))  # before its RSVP
    h.add(ev.RsvpReceived(meeting_id=meeting, rsvp_id=attended_early, member_id=moved, status="going"))
    h.add(ev.RsvpReceived(meeting_id=meeting, rsvp_id=going, member_id=moved, status="waitlisted"))  # again
    h.add(ev.RsvpCancelled(meeting_id=meeting, rsvp_id=uid()))  # no such RSVP
    h.add(ev.RsvpLinkedToMember(meeting_id=meeting, rsvp_id=walked_in, member_id=moved, status="going",
                                attended_at=T0))  # made with a member's address before they joined
    h.add(ev.RsvpLinkedToMember(meeting_id=meeting, rsvp_id=uid(), member_id=moved, status="going"))  # no row

    campaign, ask = uid(), uid()
    h.add(ev.CampaignLaunched(campaign_id=campaign, title="Fair housing", scope_type="region", scope_id=region,
                              partner_ids=[uid()]))
    h.add(ev.AskPublished(campaign_id=campaign, ask_id=ask, kind="petition", title="Sign"))
    h.add(ev.AskPublished(campaign_id=campaign, ask_id=ask, kind="petition", title="Sign it"))  # retitled
    h.add(ev.CampaignClosed(campaign_id=campaign, closed_at=T0 + timedelta(days=9)))
    h.add(ev.CampaignLaunched(campaign_id=campaign, title="Fair housing now", scope_type="region",
                              scope_id=region))  # launched again: still closed
    h.add(ev.CampaignClosed(campaign_id=uid(), closed_at=T0))  # no such campaign

    action = uid()
    taken = h.add(ev.ActionTaken(action_id=action, ask_id=ask, campaign_id=campaign, kind="petition",
                                 member_id=moved, region_id=region, taken_at=T0))
    h.envelope(taken)
    h.add(ev.ActionTaken(action_id=action, ask_id=ask, campaign_id=campaign, kind="petition", member_id=left,
                         taken_at=T0 + timedelta(hours=1)))  # the same action again: the first stays
    anonymous = uid()
    h.add(ev.ActionTaken(action_id=anonymous, ask_id=ask, campaign_id=campaign, kind="petition", group_id=group,
                         join_network=True, taken_at=T0))
    h.add(ev.ActionLinkedToMember(action_id=anonymous, ask_id=ask, campaign_id=campaign, kind="petition",
                                  member_id=moved, region_id=region, group_id=group, taken_at=T0))
    h.add(ev.ActionLinkedToMember(action_id=uid(), ask_id=ask, campaign_id=campaign, kind="petition",
                                  member_id=moved, taken_at=T0))  # no such action
    # An action whose taker joined with it (placed by that member's places, even after they move), and an action
    # of a member who joins, moves and is erased after it.
    joined_with, taker = uid(), uid()
    h.add(ev.ActionTaken(action_id=joined_with, ask_id=ask, campaign_id=campaign, kind="petition", join_network=True,
                         taken_at=T0))
    h.add(joined(uid(), None, [late], source=f"action:{joined_with}", joined_at=T0))
    h.add(ev.ActionTaken(action_id=uid(), ask_id=ask, campaign_id=campaign, kind="petition", member_id=taker,
                         taken_at=T0))
    h.add(joined(taker, other_region, [moving], joined_at=T0))
    h.add(ev.MemberProfileUpdated(member_id=taker, changed=["groups", "subteams"], group_ids=[group],
                                  subteam_ids=[subteam]))
    h.add(ev.MemberErased(member_id=taker, erased_at=T0 + timedelta(days=1)))
    h.add(ev.EngagementLevelChanged(member_id=moved, level="participant"))
    h.add(ev.EngagementLevelChanged(member_id=moved, level="activist", previous_level="participant"))

    # What the projection skips: a tombstone, bytes that are no envelope, an event of a type it does not project,
    # an event whose data does not validate (then a valid one with its id, which counts), a version with no model,
    # and an event replayed for another consumer group (one replayed for this group counts).
    h.raw(None)
    h.raw(b"{not json")
    h.add(ev.MemberConfirmed(member_id=moved, confirmed_at=T0))
    valid = Envelope.wrap(joined(uid(), region, [group], joined_at=T0))
    broken = json.loads(valid.to_bytes())
    del broken["data"]["joined_at"]
    h.raw(json.dumps(broken).encode())
    h.envelope(valid)
    h.raw(Envelope.wrap(ev.MemberLeft(member_id=moved)).model_copy(update={"version": 7}).to_bytes())
    h.add(ev.MemberLeft(member_id=moved), **{H_REPLAY_FOR_GROUP: "campaigns.someone-else"})
    h.add(ev.MemberLeft(member_id=erased_after_leaving), **{H_REPLAY_FOR_GROUP: GROUP})
    return h


@pytest.fixture
async def database(campaigns_db_url: str) -> AsyncIterator[Database]:
    db = Database(campaigns_db_url, 2)
    yield db
    for schema in (ONE_BY_ONE, BULK):
        await _drop_shadow(db, schema)
    await db.dispose()


async def one_by_one(db: Database, records: list[Record]) -> RebuildResult:
    result = RebuildResult()
    await _create_shadow(db, schema=ONE_BY_ONE)
    async with UnitsOfWork(db, Outbox(tables.delivery.outbox)).begin() as uow:
        await uow.session.execute(text(f"SET LOCAL search_path TO {ONE_BY_ONE}, public"))
        await apply_records(uow, records, GROUP, result, careful=True)
    return result


async def in_bulk(db: Database, records: list[Record], batch: int = 7) -> RebuildResult:
    result = RebuildResult()
    await _create_shadow(db, indexed=False, schema=BULK)
    bulk = BulkShadow(GROUP)
    for start in range(0, len(records), batch):
        bulk.add(records[start:start + batch], result)
    await bulk.write(db, BULK)
    return result


async def rows(db: Database, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    async with db.transaction() as session:
        for t in tables.REPORTING_TABLES:
            columns = ", ".join(c.name for c in t.columns if c.name != "processed_at")
            out[t.name] = [tuple(r) for r in (await session.execute(text(
                f"SELECT {columns} FROM {schema}.{t.name} ORDER BY {columns}"))).all()]
    return out


async def indexes(db: Database, schema: str) -> set[str]:
    """Each index of the schema's tables, by what it indexes (LIKE … INCLUDING ALL names them its own way)."""
    async with db.transaction() as session:
        found = (await session.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s"), {"s": schema})).all()
    return {definition.replace(f" {name} ON {schema}.", " ON ") for name, definition in found}


async def test_the_bulk_replay_writes_the_rows_the_event_by_event_projection_writes(database):
    records = a_history_of_every_case().records
    expected = await one_by_one(database, records)
    got = await in_bulk(database, records)

    assert (got.records, got.applied, got.skipped) == (expected.records, expected.applied, expected.skipped)
    assert expected.skipped == 3  # the bytes that are no envelope, the data that does not validate, version 7
    reference, bulk = await rows(database, ONE_BY_ONE), await rows(database, BULK)
    assert all(reference[t] for t in reference)  # every table has rows
    assert bulk == reference
    # Built after the load, the bulk shadow's keys and indexes are those of the live tables, so the catch-up
    # under lock claims the inbox and upserts rows exactly as the live consumer does.
    assert await indexes(database, BULK) == await indexes(database, ONE_BY_ONE)


async def test_the_same_rows_whatever_the_batches(database):
    records = a_history_of_every_case().records
    await one_by_one(database, records)
    reference = await rows(database, ONE_BY_ONE)
    for batch in (1, len(records)):
        await in_bulk(database, records, batch)
        assert await rows(database, BULK) == reference


async def test_the_live_projection_batch_by_batch_keeps_the_tallies_a_recount_of_everyone_gives(database):
    """The live consumer projects batches (`project_batch`), keeping the dashboard's tallies as members join, move,
    leave, rejoin, are erased or reach a level; the bulk replay counts everyone once at the end."""
    records = a_history_of_every_case().records
    await in_bulk(database, records)
    recounted = (await rows(database, BULK))["rpt_tallies"]
    assert {(r[0], r[2]) for r in recounted} >= {("network", "place"), ("region", "place"), ("group", "place"),
                                                 ("subteam", "place"), ("region", "level"), ("region", "partner"),
                                                 ("network", "ask"), ("group", "ask"), ("subteam", "campaign")}
    for batch in (1, 5, len(records)):
        await _create_shadow(database, schema=ONE_BY_ONE)
        uows = UnitsOfWork(database, Outbox(tables.delivery.outbox))
        for start in range(0, len(records), batch):
            try:
                async with uows.begin() as uow:
                    await uow.session.execute(text(f"SET LOCAL search_path TO {ONE_BY_ONE}, public"))
                    await apply_batch(uow, records[start:start + batch], GROUP, RebuildResult())
            except Exception:  # as the consumer: a batch with a bad record again one record at a time
                async with uows.begin() as uow:
                    await uow.session.execute(text(f"SET LOCAL search_path TO {ONE_BY_ONE}, public"))
                    await apply_records(uow, records[start:start + batch], GROUP, RebuildResult())
        assert (await rows(database, ONE_BY_ONE))["rpt_tallies"] == recounted, batch


async def test_a_row_the_database_refuses_fails_the_bulk_write_so_the_rebuild_replays_event_by_event(database):
    """Event by event, the projection skips just that event; the bulk write fails as a whole, and the rebuild
    then replays the topics event by event (`rebuild.rebuild`)."""
    h = History()
    h.add(joined(uid(), None, joined_at=T0))
    h.add(joined("m" * 40, None, joined_at=T0))  # longer than the column
    expected = await one_by_one(database, h.records)
    assert (expected.applied, expected.skipped) == (1, 1)
    with pytest.raises(Exception, match="too long"):
        await in_bulk(database, h.records)


async def test_the_swap_leaves_the_live_tables_holding_the_rebuilt_rows_and_other_groups_inbox_rows(database):
    records = a_history_of_every_case().records
    await one_by_one(database, records)  # stands for the live model: right but for the damage below
    await in_bulk(database, records)
    rebuilt = await rows(database, BULK)
    other_group, lost_member = str(uuid.uuid4()), str(uuid.uuid4())
    async with database.transaction() as session:
        await session.execute(text(f"DELETE FROM {ONE_BY_ONE}.rpt_actions"))
        await session.execute(text(f"UPDATE {ONE_BY_ONE}.rpt_members SET status = 'left' WHERE status = 'active'"))
        await session.execute(text(f"DELETE FROM {ONE_BY_ONE}.rpt_inbox WHERE event_type = 'ActionTaken'"))
        await session.execute(text(f"INSERT INTO {ONE_BY_ONE}.rpt_members (member_id, joined_at) VALUES "
                                   f"('{lost_member}', now())"))
        await session.execute(text(f"INSERT INTO {ONE_BY_ONE}.rpt_inbox (consumer, event_id, event_type) VALUES "
                                   f"('another.group', '{other_group}', 'MemberJoined')"))
        kept_since = (await session.execute(text(
            f"SELECT min(processed_at) FROM {ONE_BY_ONE}.rpt_inbox WHERE event_type = 'MemberJoined'"))).scalar()
    async with database.transaction() as session:
        changed = await _swap(session, GROUP, shadow=BULK, target=ONE_BY_ONE)
    swapped = await rows(database, ONE_BY_ONE)
    assert swapped["rpt_inbox"] == sorted(rebuilt["rpt_inbox"] + [("another.group", uuid.UUID(other_group),
                                                                    "MemberJoined")])
    assert {t: r for t, r in swapped.items() if t != "rpt_inbox"} == {
        t: r for t, r in rebuilt.items() if t != "rpt_inbox"}
    assert changed > 0
    async with database.transaction() as session:
        assert (await session.execute(text(
            f"SELECT min(processed_at) FROM {ONE_BY_ONE}.rpt_inbox WHERE event_type = 'MemberJoined'"
        ))).scalar() == kept_since
        assert await _swap(session, GROUP, shadow=BULK, target=ONE_BY_ONE) == 0  # nothing left to change
