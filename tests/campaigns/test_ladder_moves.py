"""Changing the engagement ladder moves every member in SQL, by the ladder's own rule (domain.level_for), a chunk
at a time in the background (ladder_moves.py).

A national network's organiser saves a ladder without waiting while each of its members is recomputed in turn (the
old way: a few statements a member, a minute at 20,000): the ladder is in force at once, and the levels are found
and written in set-based statements, a chunk a transaction. These tests hold the SQL to the Python rule on members
of every kind, through chunks, a restart and a superseding save, against consumers applying the ladder meanwhile, in
a migrated database of their own.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import text

from services.campaigns import db as tables
from services.campaigns.domain import DEFAULT_LADDER, LadderRung, level_for
from services.campaigns.engagement import EngagementService
from services.campaigns.ladder_moves import LadderMoves
from shared.db import Database
from shared.events.catalog import ActionTaken
from shared.events.envelope import Envelope
from shared.outbox import Outbox
from shared.uow import UnitsOfWork
from tests.campaigns.conftest import SERVICE_DIR
from tests.support.inprocess import asyncpg_dsn, fresh_test_database, until_blocked_by

TEST_DB = "groundswell_campaigns_ladder_test"
LADDER_LOCK = "hashtext(current_schema() || '.engagement_ladder')"  # queries.hold_ladder's
CHUNK = 37  # members moved a transaction: the 400 members' moves take several chunks
ROLES = ("organiser", "subteam_lead", "constituency_rep", "treasurer")
LADDERS = {
    "default": DEFAULT_LADDER,
    "roles in the middle, totals only at the top": (
        LadderRung("new", "New"),
        LadderRung("helper", "Helper", min_actions=1),
        LadderRung("core", "Core", min_attended=2, roles=("treasurer",)),
        LadderRung("leader", "Leader", min_total=9, roles=("organiser", "constituency_rep")),
    ),
    "two levels": (LadderRung("member", "Member"), LadderRung("active", "Active", min_total=2)),
    # a later rung easier than an earlier one: the highest reached wins, as level_for says
    "out of order": (
        LadderRung("a", "A"), LadderRung("b", "B", min_actions=6), LadderRung("c", "C", min_attended=1),
    ),
}


@pytest.fixture(scope="module")
def ladder_db_url() -> str:
    return fresh_test_database("campaigns", TEST_DB, SERVICE_DIR)


@pytest.fixture
async def db(ladder_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(ladder_db_url))
    for table in ("members", "outbox", "engagement_ladder", "ladder_changes", "engagement_facts"):
        await conn.execute(f"DELETE FROM {table}")
    yield conn
    await conn.close()


@pytest.fixture
async def engagement(ladder_db_url: str) -> AsyncIterator[EngagementService]:
    database = Database(ladder_db_url, pool_size=4)
    uows = UnitsOfWork(database, Outbox(tables.delivery.outbox))
    yield EngagementService(uows, moves=LadderMoves(uows, chunk=CHUNK))
    await database.dispose()


async def members_of_every_kind(db: asyncpg.Connection, ladder: tuple[LadderRung, ...],
                                n: int = 400) -> dict[str, dict]:
    """Members with counts on both sides of every threshold, roles or none, a level of this ladder, of another or
    none yet, some who left."""
    rng = random.Random(20261207)
    members = {}
    levels = [None, *(r.level for r in ladder), *(r.level for r in ladder), "a level no ladder has"]
    for _ in range(n):
        m = {"member_id": str(uuid.uuid4()), "actions": rng.randint(0, 10), "attended": rng.randint(0, 5),
             "roles": rng.sample(ROLES, rng.choice([0, 0, 0, 1, 2])), "level": rng.choice(levels),
             "status": rng.choice(["active"] * 9 + ["left"])}
        members[m["member_id"]] = m
    await db.executemany(
        "INSERT INTO members (member_id, status, roles, actions, attended, level, level_since) "
        "VALUES ($1, $2, $3, $4, $5, $6, '2020-01-01')",
        [(m["member_id"], m["status"], m["roles"], m["actions"], m["attended"], m["level"])
         for m in members.values()])
    return members


def expected_level(ladder: tuple[LadderRung, ...], m: dict) -> str:
    return level_for(ladder, actions=m["actions"], attended=m["attended"], roles=m["roles"])


async def published(db: asyncpg.Connection) -> list[dict]:
    rows = await db.fetch("SELECT payload FROM outbox WHERE event_type = 'EngagementLevelChanged' ORDER BY id")
    return [Envelope.from_bytes(bytes(r["payload"])).data for r in rows]


@pytest.mark.parametrize("name", LADDERS)
async def test_a_new_ladder_moves_exactly_the_members_its_rule_moves_and_publishes_each_move(db, engagement, name):
    ladder = LADDERS[name]
    members = await members_of_every_kind(db, ladder)
    active = {i: m for i, m in members.items() if m["status"] == "active"}
    moving = {i for i, m in active.items() if expected_level(ladder, m) != m["level"]}
    assert moving and len(moving) < len(active)  # the data has members on both sides

    assert await engagement.members_moving(ladder) == len(moving)  # what the organiser is asked to confirm
    before = datetime.now(UTC)
    # A first level at the bottom of the ladder is not news (domain.assess); every other move is published.
    news = {i for i in moving if active[i]["level"] is not None or expected_level(ladder, active[i]) != ladder[0].level}
    saved = await engagement.set_ladder(ladder)
    assert (saved.status, saved.expected, saved.moved, saved.chunks) == ("moving", len(moving), CHUNK, 1)
    # The ladder is in force at once; the rest of the members move in chunks.
    assert [r.level for r in await engagement.ladder()] == [r.level for r in ladder]
    done = await engagement.moves.finish()
    assert done is not None and (done.status, done.moved, done.published) == ("done", len(moving), len(news))
    assert done.chunks == len(moving) // CHUNK + 1 and done.finished_at is not None

    rows = {r["member_id"]: r for r in await db.fetch("SELECT * FROM members")}
    for member_id, m in members.items():
        row = rows[member_id]
        if m["status"] != "active":  # those who left keep what they had
            assert (row["level"], row["level_since"].year) == (m["level"], 2020)
            continue
        assert row["level"] == expected_level(ladder, m), (m, ladder)
        assert (row["level_since"] >= before) == (member_id in moving)
        assert (row["actions"], row["attended"], list(row["roles"])) == (m["actions"], m["attended"], m["roles"])
    events = await published(db)
    assert {e["member_id"] for e in events} == news and len(events) == len(news)
    for e in events:
        m = active[e["member_id"]]
        assert (e["level"], e["previous_level"], e["reason"]) == (expected_level(ladder, m), m["level"],
                                                                  "the ladder changed")
    assert [(r["level"], r["min_total"]) for r in await db.fetch("SELECT * FROM engagement_ladder ORDER BY position")] \
        == [(r.level, r.min_total) for r in ladder]

    # Saving the same ladder again moves nobody and publishes nothing: done before set_ladder returns.
    assert await engagement.members_moving(ladder) == 0
    again = await engagement.set_ladder(ladder)
    assert (again.status, again.expected, again.moved, again.chunks) == ("done", 0, 0, 1)
    assert len(await published(db)) == len(news)
    assert await engagement.moves.step() is None  # nothing left to move


async def test_a_fact_counted_while_the_ladder_changes_is_waited_for_and_its_count_used(db, engagement,
                                                                                       ladder_db_url):
    """A consumer holding a member's row (counting an action) when the ladder is saved: the save waits for it and
    gives the member the level of the count it committed, not of the count read before. (The consumer holds the
    ladder's lock, as every transaction that applies the ladder takes it before a member's row: queries.hold_ladder.)"""
    member_id = str(uuid.uuid4())
    # On the counts before the fact, the new ladder would leave them where they are ('member', its bottom): only the
    # count the consumer commits moves them. (A CI run saw such a member left behind when the save read who moves
    # before waiting for the row.)
    await db.execute("INSERT INTO members (member_id, status, actions, attended, level) VALUES "
                     "($1, 'active', 0, 0, 'member')", member_id)
    ladder = LADDERS["two levels"]
    consumer = await asyncpg.connect(asyncpg_dsn(ladder_db_url))
    try:
        tx = consumer.transaction()
        await tx.start()
        await consumer.execute(f"SELECT pg_advisory_xact_lock_shared({LADDER_LOCK})")
        await consumer.execute("SELECT 1 FROM members WHERE member_id = $1 FOR UPDATE", member_id)
        await consumer.execute("UPDATE members SET actions = 2 WHERE member_id = $1", member_id)
        saving = asyncio.ensure_future(engagement.set_ladder(ladder))
        await until_blocked_by(db, consumer.get_server_pid())
        assert not saving.done()  # waiting for the consumer
        await tx.commit()
        saved = await asyncio.wait_for(saving, 30)
        assert (saved.status, saved.moved, saved.published) == ("done", 1, 1)
    finally:
        await consumer.close()
    row = await db.fetchrow("SELECT level, actions FROM members WHERE member_id = $1", member_id)
    assert (row["level"], row["actions"]) == ("active", 2)


async def test_a_consumer_that_read_the_old_ladder_is_waited_for_before_the_new_one_is_saved(db, engagement):
    """A consumer's batch reads the ladder once, then counts facts member after member. If the ladder were saved and
    its members moved while that batch ran, the batch would give a member it reaches afterwards the OLD ladder's
    level, and nothing would move them again. The save waits for such a batch (the ladder's lock): it commits its
    old-ladder levels first, then the new ladder's moves correct them."""
    left, late = str(uuid.uuid4()), str(uuid.uuid4())
    await db.execute("INSERT INTO members (member_id, status, actions, attended, level) VALUES "
                     "($1, 'left', 0, 0, 'supporter'), ($2, 'active', 0, 0, 'supporter')", left, late)
    new = (LadderRung("supporter", "Supporter"), LadderRung("participant", "Participant", min_total=2))
    async with engagement.uows.begin() as uow:  # the consumer's batch, on the default ladder
        await engagement.recompute(uow, left)  # its first event reads the ladder (a member who left: not moved)
        batch_pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        saving = asyncio.ensure_future(engagement.set_ladder(new))
        await until_blocked_by(db, batch_pid)
        assert not saving.done()  # the save waits for the batch that read the ladder it replaces
        # Its next event: an action by `late`, counted on the ladder the batch read (1 action: participant there).
        await engagement.action_taken(uow, ActionTaken(
            action_id=str(uuid.uuid4()), ask_id="a", campaign_id="c", kind="petition", member_id=late,
            taken_at=datetime.now(UTC)))
        assert (await uow.session.execute(text("SELECT level FROM members WHERE member_id = :m"), {"m": late})
                ).scalar() == "participant"
    saved = await asyncio.wait_for(saving, 30)
    await engagement.moves.finish()
    row = await db.fetchrow("SELECT level, actions FROM members WHERE member_id = $1", late)
    assert (row["level"], row["actions"]) == ("supporter", 1)  # one action: the new ladder's bottom
    assert saved.expected == 0  # counted before the batch committed; the move is made all the same
    moves = [e for e in await published(db) if e["member_id"] == late]
    assert [(e["previous_level"], e["level"]) for e in moves] == [("supporter", "participant"),
                                                                  ("participant", "supporter")]


async def test_moves_cut_short_are_resumed_by_another_process_each_published_once(db, engagement, ladder_db_url):
    ladder = LADDERS["roles in the middle, totals only at the top"]
    members = await members_of_every_kind(db, ladder)
    active = {i: m for i, m in members.items() if m["status"] == "active"}
    news = {i for i, m in active.items() if expected_level(ladder, m) != m["level"]
            and (m["level"] is not None or expected_level(ladder, m) != ladder[0].level)}
    saved = await engagement.set_ladder(ladder)
    assert saved.moving
    await engagement.moves.step()  # a second chunk committed
    # The third, cut short while it waits for a member's row (a consumer holding it): its moves, events and
    # progress are rolled back together.
    third = sorted(news)[3 * CHUNK - 1]
    consumer = await asyncpg.connect(asyncpg_dsn(ladder_db_url))
    try:
        tx = consumer.transaction()
        await tx.start()
        await consumer.execute("SELECT 1 FROM members WHERE member_id = $1 FOR UPDATE", third)
        chunk = asyncio.ensure_future(engagement.moves.step())
        await until_blocked_by(db, consumer.get_server_pid())
        assert not chunk.done()
        chunk.cancel()
        with pytest.raises(asyncio.CancelledError):
            await chunk
        await tx.rollback()
    finally:
        await consumer.close()
    progress = await db.fetchrow("SELECT chunks, moved, published FROM ladder_changes WHERE id = $1", saved.id)
    assert progress["chunks"] == 2 and len(await published(db)) == progress["published"]
    assert await db.fetchval("SELECT count(*) FROM members WHERE level_since > '2021-01-01'") == progress["moved"]
    database = Database(ladder_db_url, pool_size=2)  # another process: nothing in memory carries over
    try:
        restarted = LadderMoves(UnitsOfWork(database, Outbox(tables.delivery.outbox)), chunk=CHUNK)
        done = await restarted.finish()
    finally:
        await database.dispose()
    assert done is not None and done.id == saved.id and done.status == "done"
    rows = {r["member_id"]: r["level"] for r in await db.fetch("SELECT member_id, level FROM members")}
    assert all(rows[i] == expected_level(ladder, m) for i, m in active.items())
    events = await published(db)
    assert sorted(e["member_id"] for e in events) == sorted(news)  # each move once
    assert done.published == len(news)


async def test_a_second_save_supersedes_the_moves_in_progress_and_every_member_ends_on_it(db, engagement):
    first, second = LADDERS["two levels"], LADDERS["out of order"]
    members = await members_of_every_kind(db, first)
    active = {i: m for i, m in members.items() if m["status"] == "active"}
    one = await engagement.set_ladder(first)
    assert one.moving
    two = await engagement.set_ladder(second)
    assert (await engagement.moves.get(one.id)).status == "superseded"
    assert await db.fetchval("SELECT count(*) FROM ladder_changes WHERE status = 'moving'") == 1
    done = await engagement.moves.finish()
    assert done is not None and done.id == two.id and done.status == "done"
    rows = {r["member_id"]: r["level"] for r in await db.fetch("SELECT member_id, level FROM members")}
    assert all(rows[i] == expected_level(second, m) for i, m in active.items())
    assert [r.level for r in await engagement.ladder()] == [r.level for r in second]
    # Every event is a real move, in order: a member's last one says the level they are at.
    last = {e["member_id"]: e["level"] for e in await published(db)}
    assert all(rows[i] == level for i, level in last.items())
