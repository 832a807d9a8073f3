"""Changing the engagement ladder moves every member in SQL, by the ladder's own rule (domain.level_for).

A national network's organiser saves a ladder without waiting while each of its members is recomputed in turn (the
old way: a few statements a member, a minute at 20,000): the levels are found and written in set-based statements.
These tests hold the SQL to the Python rule on members of every kind, in a migrated database of their own.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from services.campaigns import db as tables
from services.campaigns.domain import DEFAULT_LADDER, LadderRung, level_for
from services.campaigns.engagement import EngagementService
from shared.db import Database
from shared.events.envelope import Envelope
from shared.outbox import Outbox
from shared.uow import UnitsOfWork
from tests.campaigns.conftest import SERVICE_DIR
from tests.support.inprocess import asyncpg_dsn, fresh_test_database

TEST_DB = "groundswell_campaigns_ladder_test"
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
    for table in ("members", "outbox", "engagement_ladder"):
        await conn.execute(f"DELETE FROM {table}")
    yield conn
    await conn.close()


@pytest.fixture
async def engagement(ladder_db_url: str) -> AsyncIterator[EngagementService]:
    database = Database(ladder_db_url, pool_size=2)
    yield EngagementService(UnitsOfWork(database, Outbox(tables.delivery.outbox)))
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
    assert await engagement.set_ladder(ladder) == len(news)

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

    # Saving the same ladder again moves nobody and publishes nothing.
    assert await engagement.members_moving(ladder) == 0
    assert await engagement.set_ladder(ladder) == 0
    assert len(await published(db)) == len(news)


async def test_a_fact_counted_while_the_ladder_changes_is_waited_for_and_its_count_used(db, engagement,
                                                                                       ladder_db_url):
    """A consumer holding a member's row (counting an action) when the ladder is saved: the save waits for it and
    gives the member the level of the count it committed, not of the count read before."""
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
        await consumer.execute("SELECT 1 FROM members WHERE member_id = $1 FOR UPDATE", member_id)
        await consumer.execute("UPDATE members SET actions = 2 WHERE member_id = $1", member_id)
        saving = asyncio.ensure_future(engagement.set_ladder(ladder))
        await asyncio.sleep(1)
        assert not saving.done()  # waiting for the member's row
        await tx.commit()
        assert await asyncio.wait_for(saving, 30) == 1
    finally:
        await consumer.close()
    row = await db.fetchrow("SELECT level, actions FROM members WHERE member_id = $1", member_id)
    assert (row["level"], row["actions"]) == ("active", 2)
