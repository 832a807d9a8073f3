"""Benchmark 10: an organiser saves a new engagement ladder on a national network.

The count the organiser confirms (`members_moving`); the save as the organiser's request makes it
(`EngagementService.set_ladder`: the ladder put in force and the first chunk of its moves); and the moves to the
end as the service's background loop makes them (`LadderMoves.step`, a chunk a transaction), every active member
moved to the level the new ladder gives them and each move published (EngagementLevelChanged through the outbox).
Each is timed beside a baseline in the same run on the same data: the same count by hand, and the same moves written
by hand as one UPDATE (no events).

It runs on a database of its own beside the stack's campaigns database (created, migrated with campaigns' real
migrations, and dropped afterwards), seeded with 100,000 members (20,000 with --quick; LADDER_MEMBERS=1000000 for a
national network's size) and their facts: most have done nothing, a few a lot. Nothing reaches the running services.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import REPO_ROOT, BenchOutcome, Result, asyncpg_dsn, say
from services.campaigns import db as tables
from services.campaigns.domain import DEFAULT_LADDER, LadderRung
from services.campaigns.engagement import EngagementService
from shared.db import Database
from shared.outbox import Outbox
from shared.uow import UnitsOfWork
from tests.support.inprocess import fresh_test_database

BENCH_DB = "groundswell_bench_ladder"
# Harder thresholds than the default ladder's, and a role at the top: a change that moves thousands.
NEW_LADDER = (
    LadderRung("supporter", "Supporter"),
    LadderRung("participant", "Participant", min_total=2),
    LadderRung("activist", "Activist", min_actions=4, min_attended=1),
    LadderRung("organiser", "Organiser", min_actions=6, min_attended=3, roles=("organiser",)),
)
BY_HAND = (
    "UPDATE members SET level = CASE WHEN 'organiser' = ANY(roles) OR (actions >= 6 AND attended >= 3) THEN "
    "'organiser' WHEN actions >= 4 AND attended >= 1 THEN 'activist' WHEN actions + attended >= 2 THEN "
    "'participant' ELSE 'supporter' END, level_since = now() WHERE status = 'active' AND level IS DISTINCT FROM "
    "CASE WHEN 'organiser' = ANY(roles) OR (actions >= 6 AND attended >= 3) THEN 'organiser' WHEN actions >= 4 AND "
    "attended >= 1 THEN 'activist' WHEN actions + attended >= 2 THEN 'participant' ELSE 'supporter' END"
)
COUNT_BY_HAND = "SELECT count(*) FROM members WHERE status = 'active' AND level IS DISTINCT FROM " + \
    BY_HAND.split("IS DISTINCT FROM ", 1)[1]


async def _database() -> str:
    """A fresh database beside campaigns', migrated with campaigns' migrations (as the tests make theirs); its URL."""
    return await asyncio.to_thread(fresh_test_database, "campaigns", BENCH_DB, REPO_ROOT / "services" / "campaigns")


async def _drop() -> None:
    conn = await asyncpg.connect(asyncpg_dsn("campaigns").rsplit("/", 1)[0] + "/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    finally:
        await conn.close()


async def _seed(conn: asyncpg.Connection, n: int) -> int:
    """`n` active members on the default ladder's levels, with their facts; returns how many facts."""
    rng = random.Random(20)
    now = datetime.now(UTC)
    members: list[tuple[Any, ...]] = []
    facts: list[tuple[Any, ...]] = []
    for _ in range(n):
        member_id = str(uuid.uuid4())
        actions = rng.choice([0] * 6 + [1, 2, 3, 5, 8])
        attended = rng.choice([0] * 8 + [1, 2, 4])
        roles = ["organiser"] if rng.random() < 0.005 else []
        members.append((member_id, "active", roles, actions, attended))
        facts += [(str(uuid.uuid4()), "action", member_id, now) for _ in range(actions)]
        facts += [(str(uuid.uuid4()), "attendance", member_id, now) for _ in range(attended)]
    await conn.copy_records_to_table("members", records=members,
                                     columns=["member_id", "status", "roles", "actions", "attended"])
    await conn.copy_records_to_table("engagement_facts", records=facts,
                                     columns=["fact_id", "kind", "member_id", "occurred_at"])
    return len(facts)


async def _reset(conn: asyncpg.Connection, service: EngagementService) -> None:
    """Everyone back on the default ladder's levels, no events waiting."""
    await service.moves.finish((await service.set_ladder(DEFAULT_LADDER)).id)
    await conn.execute("DELETE FROM outbox")
    await conn.execute("VACUUM ANALYZE members")


async def run(quick: bool, workdir: Path) -> BenchOutcome:
    # LADDER_MEMBERS: another size (a national network's million); the default 100,000, 20,000 with --quick.
    n = int(os.environ.get("LADDER_MEMBERS") or (20_000 if quick else 100_000))
    out = BenchOutcome("Engagement ladder change")
    url = await _database()
    db = Database(url, pool_size=2)
    conn = await asyncpg.connect(asyncpg_dsn("campaigns").rsplit("/", 1)[0] + f"/{BENCH_DB}")
    try:
        say(f"ladder: seeding {n:,} members and their facts")
        out.sizes.update({"members": f"{n:,}", "facts": f"{await _seed(conn, n):,}"})
        service = EngagementService(UnitsOfWork(db, Outbox(tables.delivery.outbox)))
        await _reset(conn, service)

        started = time.perf_counter()
        moving = await service.members_moving(NEW_LADDER)
        counted = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        by_hand = await conn.fetchval(COUNT_BY_HAND)
        counted_by_hand = (time.perf_counter() - started) * 1000
        if moving != by_hand:
            raise RuntimeError(f"the count to confirm ({moving}) differs from the hand-written one ({by_hand})")
        out.add(Result("members a new ladder moves, counted", counted, "ms", "the count by hand in SQL",
                       counted_by_hand, note=f"{moving:,} of {n:,} move", higher_is_better=False))

        started = time.perf_counter()
        change = await service.set_ladder(NEW_LADDER, expected=moving)
        answered = time.perf_counter() - started
        done = await service.moves.finish(change.id)
        saved = time.perf_counter() - started
        assert done is not None
        published, chunks = done.published, done.chunks
        events = await conn.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'EngagementLevelChanged'")
        await _reset(conn, service)
        started = time.perf_counter()
        updated = int((await conn.execute(BY_HAND)).split()[-1])
        saved_by_hand = time.perf_counter() - started
        if (published, events) != (updated, updated):
            raise RuntimeError(f"set_ladder moved {published} and published {events}; by hand {updated} moved")
        out.add(Result("the organiser's save answered (ladder in force, first chunk moved)", answered, "s",
                       "the same moves by one UPDATE by hand (no events)", saved_by_hand, higher_is_better=False,
                       note=f"{min(service.moves.chunk, moving):,} of {moving:,} moved before the answer"))
        out.add(Result("ladder saved, every member moved and each move published", saved, "s",
                       "the same moves by one UPDATE by hand (no events)", saved_by_hand, higher_is_better=False,
                       note=f"{published:,} moves, each an EngagementLevelChanged in the outbox, in {chunks} "
                            "chunks (transactions)"))
    finally:
        await conn.close()
        await db.dispose()
        await _drop()
    return out
