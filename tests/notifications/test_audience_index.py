"""The in-memory audience index (services/notifications/audience_index.py) against the running system's
notifications database: for generated members with every kind of filter, its count equals the SQL count
(mailings.count_audience) at the same moment, before and after suppressions added and lifted, consent withdrawn,
moves between units, participation, deletions, and a transaction that commits after a later one; and a change
committed just before a count is in it, in this process's index and through the running service's page."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from deploy.local import launcher
from services.notifications.audience_index import AudienceIndex
from services.notifications.domain import MailingAudience
from services.notifications.mailings import count_audience
from services.notifications.suppression import Suppressions
from tests.conftest import asyncpg_dsn
from tests.notifications.test_mailings import region_organiser

BASE = "/notifications/organise/mailings"
DAYS = (1, 30, 180, 365)


@pytest.fixture
async def index(system: None) -> AsyncIterator[tuple[AudienceIndex, async_sessionmaker[Any]]]:
    """An audience index of this test's own over the running notifications database, loaded."""
    engine = create_async_engine(launcher.database_url("notifications"), pool_size=2)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    built = AudienceIndex(sessions, load_batch=50)  # several batches even on a small database
    await built.load()
    yield built, sessions
    await engine.dispose()


@pytest.fixture
async def network(notifications_db: asyncpg.Connection) -> AsyncIterator[dict[str, Any]]:
    """Units, interests and levels of this test's own (so counts by them hold only its members); removed after."""
    tag = uuid.uuid4().hex[:8]
    made: dict[str, Any] = {
        "regions": [str(uuid.uuid4()) for _ in range(3)],
        "groups": [str(uuid.uuid4()) for _ in range(4)],
        "subteams": [str(uuid.uuid4()) for _ in range(2)],
        "interests": [f"{name}-{tag}" for name in ("housing", "climate", "transport", "health")],
        "levels": [f"{name}-{tag}" for name in ("supporter", "volunteer", "organiser")],
        "members": [],
        "keys": [],
        "tag": tag,
    }
    yield made
    conn = notifications_db
    await conn.execute("DELETE FROM participation WHERE member_id = ANY($1::text[])", made["members"])
    await conn.execute("DELETE FROM recipients WHERE member_id = ANY($1::text[])", made["members"])
    await conn.execute("DELETE FROM suppressions WHERE email = ANY($1::text[])", made["keys"])


def _members(made: dict[str, Any], n: int, now: datetime, rng: random.Random) -> list[tuple[Any, ...]]:
    """Members with every trait a filter reads, some exactly on a filter's day boundary (to the microsecond)."""
    rows = []
    for i in range(n):
        mid = str(uuid.uuid4())
        email = None if i % 17 == 0 else f"idx-{made['tag']}-{i}@example.org"
        boundary = now - timedelta(days=rng.choice(DAYS))
        joined = rng.choice(
            [None, boundary, boundary - timedelta(microseconds=1), boundary + timedelta(microseconds=1),
             now - timedelta(days=rng.uniform(0, 400))]
        )
        rows.append(
            (
                mid,
                email,
                rng.random() > 0.1,  # consent
                "pending" if i % 11 == 0 else "confirmed",
                rng.choice(made["regions"] + [None]),
                rng.sample(made["groups"], rng.randint(0, 2)),
                rng.sample(made["subteams"], rng.randint(0, 1)),
                rng.choice(made["levels"] + [None]),
                rng.sample(made["interests"], rng.randint(0, 3)),
                joined,
            )
        )
    made["members"].extend(row[0] for row in rows)
    return rows


async def _insert(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    keys = Suppressions(launcher.secret_key())
    await conn.executemany(
        "INSERT INTO recipients (member_id, email, name, email_consent, status, region_id, group_ids, subteam_ids, "
        "engagement_level, interests, joined_at, address_key, updated_at) "
        "VALUES ($1, $2, 'Index Member', $3, $4, $5, $6, $7, $8, $9, $10, $11, now())",
        [(*row, keys.address_key(row[1]) if row[1] else None) for row in rows],
    )


async def _took_part(conn: asyncpg.Connection, members: list[str], when: list[datetime]) -> None:
    await conn.executemany(
        "INSERT INTO participation (member_id, first_at, last_at, count) VALUES ($1, $2, $2, 1) "
        "ON CONFLICT (member_id) DO UPDATE SET last_at = EXCLUDED.last_at",
        list(zip(members, when, strict=True)),
    )


def _audiences(made: dict[str, Any]) -> list[tuple[str, str | None, MailingAudience]]:
    """Combinations of every kind of filter, in the network's scope and in a region's and a group's."""
    r, g, s, i, lv = made["regions"], made["groups"], made["subteams"], made["interests"], made["levels"]
    audiences = [
        MailingAudience(),
        MailingAudience(unit_ids=(r[0],)),
        MailingAudience(unit_ids=(r[1], g[2])),
        MailingAudience(unit_ids=(s[0],), levels=(lv[1],)),
        MailingAudience(interests=(i[0],)),
        MailingAudience(interests=(i[1], i[2]), levels=(lv[0], lv[2])),
        MailingAudience(interests=(i[3],), exclude_unit_ids=(g[0], s[1])),
        MailingAudience(unit_ids=(r[0], r[2]), exclude_unit_ids=(g[1],), joined_within_days=365),
        MailingAudience(interests=(i[0],), quiet_for_days=180),
        MailingAudience(interests=(i[2],), took_part_within_days=30),
        MailingAudience(levels=(lv[1],), quiet_for_days=30, joined_within_days=180),
        MailingAudience(interests=(i[1],), took_part_within_days=365, quiet_for_days=30),
    ]
    audiences += [MailingAudience(interests=(i[0], i[1]), joined_within_days=d) for d in DAYS]
    audiences += [MailingAudience(unit_ids=(r[0], r[1], r[2]), took_part_within_days=d) for d in DAYS]
    audiences += [MailingAudience(interests=tuple(i), quiet_for_days=d) for d in DAYS]
    scopes: list[tuple[str, str | None]] = [("network", None), ("region", r[0]), ("group", g[1])]
    return [(scope_type, scope_id, a) for scope_type, scope_id in scopes for a in audiences] + [
        ("region", r[1], MailingAudience(unit_ids=(g[0],), exclude_unit_ids=(s[0],), quiet_for_days=1))
    ]


async def _agree(index: AudienceIndex, sessions: async_sessionmaker[Any], made: dict[str, Any], now: datetime) -> int:
    """Every combination counted by the index and by SQL at `now`: equal. Returns how many were not empty."""
    not_empty = 0
    async with sessions() as session:
        for scope_type, scope_id, audience in _audiences(made):
            from_index = await index.count(session, scope_type, scope_id, audience, now)
            by_sql = await count_audience(session, scope_type, scope_id, audience, now)
            assert from_index == by_sql, (scope_type, scope_id, audience, from_index, by_sql)
            not_empty += by_sql > 0
    return not_empty


async def test_the_index_counts_what_sql_counts_for_every_filter_through_every_kind_of_change(
    index, network, notifications_db
):
    built, sessions = index
    conn = notifications_db
    rng = random.Random(17)
    now = datetime.now(UTC)
    made = network
    # Some before the index loads (the test's index is loaded already: these arrive by refresh), some after.
    rows = _members(made, 240, now, rng)
    await _insert(conn, rows[:120])
    await _insert(conn, rows[120:])
    members = [row[0] for row in rows]
    boundary = [now - timedelta(days=rng.choice(DAYS)) + timedelta(microseconds=rng.choice((-1, 0, 1)))
                for _ in range(80)]
    await _took_part(conn, members[:80], boundary)
    await _took_part(conn, members[80:140], [now - timedelta(days=rng.uniform(0, 400)) for _ in range(60)])
    assert await _agree(built, sessions, made, now) > 40
    loaded_now = AudienceIndex(sessions, load_batch=50)  # the same members read by a load, not by refreshes
    await loaded_now.load()
    assert await _agree(loaded_now, sessions, made, now) > 40

    keys = Suppressions(launcher.secret_key())
    suppressed = [row[1] for row in rows[:60] if row[1]]
    made["keys"].extend(keys.address_key(email) for email in suppressed)
    # Suppressions added (the database's trigger marks the recipients), consent withdrawn, moves between units,
    # a level and interests changed, participation moved back, an address removed.
    await conn.executemany(
        "INSERT INTO suppressions (email, reason) VALUES ($1, 'unsubscribed') ON CONFLICT DO NOTHING",
        [(keys.address_key(email),) for email in suppressed],
    )
    await conn.execute("UPDATE recipients SET email_consent = false WHERE member_id = ANY($1::text[])", members[60:80])
    await conn.execute(
        "UPDATE recipients SET region_id = $2, group_ids = ARRAY[$3], subteam_ids = '{}' "
        "WHERE member_id = ANY($1::text[])",
        members[80:110],
        made["regions"][2],
        made["groups"][3],
    )
    await conn.execute(
        "UPDATE recipients SET engagement_level = $2, interests = ARRAY[$3] WHERE member_id = ANY($1::text[])",
        members[110:130],
        made["levels"][0],
        made["interests"][3],
    )
    await _took_part(conn, members[130:140], [now - timedelta(days=30)] * 10)
    await conn.execute("UPDATE recipients SET email = NULL WHERE member_id = ANY($1::text[])", members[140:145])
    await conn.execute("UPDATE recipients SET status = 'left' WHERE member_id = ANY($1::text[])", members[145:150])
    assert await _agree(built, sessions, made, now) > 40

    # Suppressions lifted, consent given again, members deleted (erasure deletes the row), one back as new.
    await conn.execute(
        "DELETE FROM suppressions WHERE email = ANY($1::text[])", [keys.address_key(e) for e in suppressed[:30]]
    )
    await conn.execute("UPDATE recipients SET email_consent = true WHERE member_id = ANY($1::text[])", members[60:70])
    await conn.execute("DELETE FROM recipients WHERE member_id = ANY($1::text[])", members[150:190])
    await _insert(conn, [rows[150]])
    assert await _agree(built, sessions, made, now) > 40


async def test_a_transaction_that_commits_after_a_later_one_is_not_missed(index, network, notifications_db):
    """The first writer takes its transaction id, a second writes and commits, a count runs (its snapshot's xmin
    is at or below the first's id), then the first commits: the next count has it."""
    built, sessions = index
    made = network
    now = datetime.now(UTC)
    rows = _members(made, 20, now, random.Random(3))
    rows = [(*row[:2], True, "confirmed", made["regions"][0], *row[5:]) for row in rows if row[1]]
    await _insert(notifications_db, rows)
    in_region = ("region", made["regions"][0], MailingAudience())
    assert await _agree(built, sessions, made, now) > 0
    first = await asyncpg.connect(asyncpg_dsn("notifications"))
    second = await asyncpg.connect(asyncpg_dsn("notifications"))
    try:
        slow = first.transaction()
        await slow.start()
        move = "UPDATE recipients SET region_id = $2 WHERE member_id = $1"
        await first.execute(move, rows[0][0], made["regions"][1])
        await second.execute(move, rows[1][0], made["regions"][1])
        async with sessions() as session:
            before = await built.count(session, *in_region, now)
        assert before == len(rows) - 1
        await slow.commit()
        async with sessions() as session:
            after = await built.count(session, *in_region, now)
        assert after == len(rows) - 2
        assert await _agree(built, sessions, made, now) > 0
    finally:
        await first.close()
        await second.close()


async def test_a_change_committed_just_before_the_count_is_in_it(index, network, notifications_db):
    built, sessions = index
    made = network
    now = datetime.now(UTC)
    region = ("region", made["regions"][0], MailingAudience(interests=(made["interests"][0],)))
    async with sessions() as session:
        assert await built.count(session, *region, now) == 0
    row = (str(uuid.uuid4()), f"live-{made['tag']}@example.org", True, "confirmed", made["regions"][0], [], [], None,
           [made["interests"][0]], now - timedelta(days=3))
    made["members"].append(row[0])
    await _insert(notifications_db, [row])
    async with sessions() as session:
        assert await built.count(session, *region, now) == 1
    await notifications_db.execute("UPDATE recipients SET interests = '{}' WHERE member_id = $1", row[0])
    async with sessions() as session:
        assert await built.count(session, *region, now) == 0


async def test_the_compose_page_counts_a_member_committed_just_before(gateway, notifications_db, network):
    """Through the running service (its own index, loaded when it started): a member added, suppressed and
    erased is counted, then not, at once."""
    made = network
    region = made["regions"][0]
    people: dict[str, list[str]] = {"organisers": [], "members": [], "keys": [], "units": []}
    headers, _ = await region_organiser(notifications_db, people, region)
    interest = made["interests"][1]

    async def count() -> int:
        answered = await gateway.get(f"{BASE}/count", params={"interest": interest}, headers=headers)
        assert answered.status_code == 200, answered.text
        return int(answered.json()["count"])

    try:
        assert await count() == 0
        row = (str(uuid.uuid4()), f"page-{made['tag']}@example.org", True, "confirmed", region, [], [], None,
               [interest], datetime.now(UTC))
        made["members"].append(row[0])
        await _insert(notifications_db, [row])
        assert await count() == 1
        key = Suppressions(launcher.secret_key()).address_key(row[1])
        made["keys"].append(key)
        await notifications_db.execute("INSERT INTO suppressions (email, reason) VALUES ($1, 'unsubscribed')", key)
        assert await count() == 0
        await notifications_db.execute("DELETE FROM suppressions WHERE email = $1", key)
        assert await count() == 1
        await notifications_db.execute("DELETE FROM recipients WHERE member_id = $1", row[0])
        assert await count() == 0
    finally:
        await notifications_db.execute(
            "DELETE FROM organisers WHERE organiser_id = ANY($1::text[])", people["organisers"]
        )



async def test_an_index_that_may_have_missed_a_pruned_tombstone_loads_afresh(index, network, notifications_db):
    """A tombstone a day old is pruned and the horizon raised past it: an index whose last snapshot came before
    that deletion cannot know what it missed, so it stops answering until loaded again, then counts right."""
    built, sessions = index
    made = network
    now = datetime.now(UTC)
    row = (str(uuid.uuid4()), f"gone-{made['tag']}@example.org", True, "confirmed", made["regions"][0], [], [], None,
           [], now)
    made["members"].append(row[0])
    await _insert(notifications_db, [row])
    in_region = ("region", made["regions"][0], MailingAudience())
    async with sessions() as session:
        assert await built.count(session, *in_region, now) == 1
    stale = AudienceIndex(sessions)
    await stale.load()  # its snapshot comes before the deletion
    number = await notifications_db.fetchval("SELECT audience_no FROM recipients WHERE member_id = $1", row[0])
    await notifications_db.execute("DELETE FROM recipients WHERE member_id = $1", row[0])
    await notifications_db.execute(
        "UPDATE audience_tombstones SET deleted_at = now() - interval '2 days' WHERE audience_no = $1", number
    )
    async with sessions() as session:
        assert await built.count(session, *in_region, now) == 0  # refreshed while the tombstone was there
    await built.prune()
    assert not await notifications_db.fetchval("SELECT count(*) FROM audience_tombstones WHERE audience_no = $1",
                                               number)
    async with sessions() as session:
        assert await stale.count(session, *in_region, now) is None
        await stale.load()
        assert await stale.count(session, *in_region, now) == 0
