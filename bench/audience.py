"""Benchmark 7, the live audience count of a mailing at 1,000,000 members: p95 of the count the compose page asks
for (the audience index, services/notifications/audience_index.py: a refresh from the database, then bitmap
operations) for several combinations of filters, beside the same count written by hand as one SQL query and the
service's own SQL count (mailings.count_audience, the page's count before the index and its fallback), run in the
same loop on the same database; once more for the whole network with 1,000 members changed before each count (the
refresh's share). The three counts must agree on every run. The index's load time and memory are printed.

It measures the query, so the read model is bulk-loaded straight into a database of its own on the stack's
PostgreSQL (`groundswell_bench_audience`, migrated by notifications' Alembic revisions, kept between runs and
reloaded only when the size changes): members over 12 regions, 60 local groups and 20 sub-teams, with interests,
engagement levels, join dates, 85% consent, 95% confirmed, 3% of addresses suppressed and 30% who took part.
The database's triggers that keep `recipients.suppressed` and `took_part_at` are off while it loads; the two are
filled in afterwards as migration 0013 does (which also brings a database loaded before it up to date). Each
combination is also counted, in the same loop, by the hand-written query of before 0013 (the wide columns it read
are still there): the count as it was, beside the count as it is, at the same load.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from bench.common import BenchOutcome, Result, fmt, launcher, percentile, rss_mib, say
from services.notifications.audience_index import AudienceIndex
from services.notifications.domain import MailingAudience
from services.notifications.mailings import count_audience
from shared.migrations import upgrade

DB = "groundswell_bench_audience"
NOTIFICATIONS_DIR = Path(__file__).resolve().parents[1] / "services" / "notifications"
REGIONS, GROUPS_PER_REGION, SUBTEAMS = 12, 5, 20
INTERESTS = (
    "housing",
    "climate",
    "transport",
    "health",
    "education",
    "migrants",
    "workers",
    "policing",
    "youth",
    "culture",
)
LEVELS = ("supporter", "volunteer", "organiser", "leader", "core")
TARGET_MS = 300.0


def unit(kind: str, i: int) -> str:
    """A deterministic id for the i-th unit of a kind (the same in SQL: md5(kind || i)::uuid)."""
    return str(uuid.UUID(hashlib.md5(f"{kind}{i}".encode()).hexdigest()))


# Each member's traits come from slices of a hash of their number: spread like random, the same on every load.
LOAD_SQL = f"""
INSERT INTO recipients (member_id, email, name, email_consent, status, region_id, engagement_level, group_ids,
                        subteam_ids, interests, joined_at, address_key, updated_at)
SELECT md5('member' || g)::uuid::text,
       CASE WHEN h % 100 = 0 THEN NULL ELSE 'bench-' || g || '@bench.example.org' END,
       'Member ' || g,
       (h / 100) % 20 NOT IN (3, 7, 11),
       CASE WHEN h % 100 IN (1, 2, 4) THEN 'pending' WHEN h % 100 IN (5, 6) THEN 'left' ELSE 'confirmed' END,
       md5('region' || (h / 2000) % {REGIONS})::uuid::text,
       (ARRAY{list(LEVELS)!r})[1 + (h / 7) % {len(LEVELS)}],
       ARRAY[md5('group' || (((h / 2000) % {REGIONS}) * {GROUPS_PER_REGION} + (h / 50000) % {GROUPS_PER_REGION}))
             ::uuid::text],
       CASE WHEN (h / 300000) % 10 = 0 THEN ARRAY[md5('subteam' || (h / 3000000) % {SUBTEAMS})::uuid::text]
            ELSE '{{}}'::text[] END,
       (SELECT coalesce(array_agg(i), '{{}}') FROM unnest(ARRAY{list(INTERESTS)!r}) WITH ORDINALITY AS t(i, n)
         WHERE (h >> (24 + n::int * 3)) % 5 = 0),
       now() - (((h / 11) % 1095) || ' days')::interval,
       CASE WHEN h % 100 = 0 THEN NULL ELSE encode(sha256(('bench-' || g)::bytea), 'hex') END,
       now()
FROM (SELECT g, abs(('x' || md5(g::text))::bit(64)::bigint) AS h FROM generate_series($1::int, $2::int) AS g) AS m
"""
SUPPRESS_SQL = """
INSERT INTO suppressions (email, reason)
SELECT encode(sha256(('bench-' || g)::bytea), 'hex'), CASE WHEN g % 2 = 0 THEN 'unsubscribed' ELSE 'hard_bounces' END
FROM generate_series(1, $1::int) AS g WHERE abs(('x' || md5('s' || g))::bit(64)::bigint) % 33 = 0
"""
PARTICIPATION_SQL = """
INSERT INTO participation (member_id, first_at, last_at, count)
SELECT md5('member' || g)::uuid::text, now() - interval '2 years', now() - ((h % 365) || ' days')::interval, 1
FROM (SELECT g, abs(('x' || md5('p' || g))::bit(64)::bigint) AS h FROM generate_series(1, $1::int) AS g) AS m
WHERE (h / 1000) % 10 < 3
"""

TRIGGERS = (
    ("recipients", "recipients_audience_facts"),
    ("suppressions", "suppressions_to_recipients"),
    ("participation", "participation_to_recipients"),
)
BACKFILL_SQL = (
    "UPDATE recipients r SET suppressed = true FROM suppressions s WHERE s.email = r.address_key",
    "UPDATE recipients r SET took_part_at = p.last_at FROM participation p WHERE p.member_id = r.member_id",
)


@dataclass(frozen=True)
class Case:
    """One combination of filters, as the service takes it and as written by hand."""

    name: str
    scope_type: str
    scope_id: str | None
    audience: MailingAudience
    sql: str
    args: tuple[object, ...] = ()
    before: str = ""  # the same count by hand as it was written before migration 0013 (the same arguments)


# By hand against the same schema (migration 0013): the reachable and not suppressed, places, levels and interests
# as the hashes in `audience_terms`, activity as `took_part_at`.
REACH = "r.email IS NOT NULL AND r.email_consent AND r.status = 'confirmed' AND NOT r.suppressed"


def term(kind: str, value: str) -> str:
    """A term as `recipients.audience_terms` holds it; `value` is SQL (a literal or a parameter)."""
    return f"hashtextextended('{kind}:' || {value}, 0)"


def in_unit(param: str) -> str:
    return f"r.audience_terms @> ARRAY[{term('unit', param)}]"


def any_of(kind: str, values: list[str]) -> str:
    return "r.audience_terms && ARRAY[" + ", ".join(term(kind, f"'{v}'") for v in values) + "]"


# Before 0013, by hand: the wide columns, the suppression list anti-joined, participation probed. Those columns
# and tables are still there, so each run measures the count as it was beside the count as it is.
BEFORE_REACH = (
    "r.email IS NOT NULL AND r.email_consent AND r.status = 'confirmed' "
    "AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.email = r.address_key)"
)
TOOK_PART_BEFORE = "EXISTS (SELECT 1 FROM participation p WHERE p.member_id = r.member_id AND p.last_at >= {since})"


def in_unit_before(param: str) -> str:
    return f"(r.region_id = {param} OR r.group_ids @> ARRAY[{param}] OR r.subteam_ids @> ARRAY[{param}])"


def cases() -> list[Case]:
    region, other, group, subteam = unit("region", 3), unit("region", 4), unit("group", 17), unit("subteam", 2)
    year_ago, month_ago = "now() - interval '365 days'", "now() - interval '30 days'"
    half_year_ago = "now() - interval '180 days'"
    c = "SELECT count(*) FROM recipients r WHERE " + REACH
    b = "SELECT count(*) FROM recipients r WHERE " + BEFORE_REACH
    return [
        Case("the whole network", "network", None, MailingAudience(), c, before=b),
        Case(
            "a region's organiser, everyone",
            "region",
            region,
            MailingAudience(),
            f"{c} AND {in_unit('$1')}",
            (region,),
            before=f"{b} AND {in_unit_before('$1')}",
        ),
        Case(
            "network, one interest",
            "network",
            None,
            MailingAudience(interests=("housing",)),
            f"{c} AND {any_of('interest', ['housing'])}",
            before=f"{b} AND r.interests && ARRAY['housing']",
        ),
        Case(
            "region, two interests and two levels",
            "region",
            region,
            MailingAudience(interests=("climate", "transport"), levels=("volunteer", "organiser")),
            f"{c} AND {in_unit('$1')} AND {any_of('interest', ['climate', 'transport'])} "
            f"AND {any_of('level', ['volunteer', 'organiser'])}",
            (region,),
            before=f"{b} AND {in_unit_before('$1')} AND r.interests && ARRAY['climate', 'transport'] "
            "AND r.engagement_level IN ('volunteer', 'organiser')",
        ),
        Case(
            "network, two regions less a group, joined in a year",
            "network",
            None,
            MailingAudience(unit_ids=(region, other), exclude_unit_ids=(group,), joined_within_days=365),
            f"{c} AND r.audience_terms && ARRAY[{term('unit', '$1')}, {term('unit', '$2')}] AND NOT {in_unit('$3')} "
            f"AND r.joined_at >= {year_ago}",
            (region, other, group),
            before=f"{b} AND ({in_unit_before('$1')} OR {in_unit_before('$2')}) AND NOT {in_unit_before('$3')} "
            f"AND r.joined_at >= {year_ago}",
        ),
        Case(
            "region, took part in the last 30 days",
            "region",
            region,
            MailingAudience(took_part_within_days=30),
            f"{c} AND {in_unit('$1')} AND r.took_part_at >= {month_ago}",
            (region,),
            before=f"{b} AND {in_unit_before('$1')} AND {TOOK_PART_BEFORE.format(since=month_ago)}",
        ),
        Case(
            "network, an interest, quiet for 180 days (the long tail)",
            "network",
            None,
            MailingAudience(interests=("health",), quiet_for_days=180),
            f"{c} AND {any_of('interest', ['health'])} "
            f"AND (r.took_part_at IS NULL OR r.took_part_at < {half_year_ago})",
            before=f"{b} AND r.interests && ARRAY['health'] AND NOT {TOOK_PART_BEFORE.format(since=half_year_ago)}",
        ),
        Case(
            "a sub-team's members at one level",
            "network",
            None,
            MailingAudience(unit_ids=(subteam,), levels=("leader",)),
            f"{c} AND {in_unit('$1')} AND {any_of('level', ['leader'])}",
            (subteam,),
            before=f"{b} AND {in_unit_before('$1')} AND r.engagement_level IN ('leader')",
        ),
    ]


def database_url(quick: bool) -> str:
    """The bench database: one per size, so a quick run does not reload the full one."""
    return launcher.database_url("notifications").rsplit("/", 1)[0] + f"/{DB}{'_quick' if quick else ''}"


def dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def prepare(members: int, url: str) -> None:
    """The bench database, migrated and loaded with `members` members (reused when it holds that many)."""
    server = await asyncpg.connect(dsn(launcher.database_url("notifications")))
    try:
        name = url.rsplit("/", 1)[1]
        if not await server.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await server.execute(f'CREATE DATABASE "{name}"')
    finally:
        await server.close()
    await asyncio.to_thread(upgrade, NOTIFICATIONS_DIR, url)
    conn = await asyncpg.connect(dsn(url))
    try:
        if await conn.fetchval("SELECT count(*) FROM recipients") == members:
            say(f"audience: reusing the {members:,} members loaded before")
            return
        say(f"audience: bulk-loading {members:,} members into {url.rsplit('/', 1)[1]}")
        started = time.monotonic()
        await conn.execute("TRUNCATE recipients, suppressions, participation")
        # The triggers that keep `suppressed` and `took_part_at` work a row at a time (and take a lock for each):
        # off for the bulk load, then both filled in as migration 0013 fills them.
        for table, trigger in TRIGGERS:
            await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
        try:
            step = 100_000
            for first in range(0, members, step):
                n = min(step, members - first)
                await conn.execute(LOAD_SQL, first + 1, first + n)
            await conn.execute(SUPPRESS_SQL, members)
            await conn.execute(PARTICIPATION_SQL, members)
            for statement in BACKFILL_SQL:
                await conn.execute(statement)
        finally:
            for table, trigger in TRIGGERS:
                await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
        await conn.execute("VACUUM ANALYZE recipients")
        await conn.execute("VACUUM ANALYZE suppressions")
        await conn.execute("VACUUM ANALYZE participation")
        say(f"audience: loaded in {time.monotonic() - started:.0f} s")
    finally:
        await conn.close()


CHURN = 1_000
# Between two counts of the churn case, this many members change (consent flipped, outside the timing): the
# count then refreshes that many rows before answering, as a page does after a busy minute of joins.
CHURN_SQL = "UPDATE recipients SET email_consent = NOT email_consent WHERE audience_no > $1 AND audience_no <= $1 + $2"


async def run(quick: bool, workdir: Path, with_before: bool = False) -> BenchOutcome:
    """The page's count (the audience index: a refresh and bitmap operations) beside the hand-written SQL count,
    and the service's SQL count (what the page asked before the index, and still its fallback), in one loop;
    `with_before` adds the query of before migration 0013."""
    members = 100_000 if quick else 1_000_000
    repeats = 20 if quick else 10
    out = BenchOutcome("Audience count", sizes={"members": f"{members:,}", "repeats per filter": repeats})
    url = database_url(quick)
    await prepare(members, url)
    engine = create_async_engine(url, pool_size=2)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    index = AudienceIndex(sessions)
    rss_before = rss_mib(os.getpid())
    await index.load()
    rss_after = rss_mib(os.getpid())
    say(
        f"audience: index loaded in {index.load_seconds:.1f} s, bitmaps and timestamps {index.nbytes() / 2**20:.1f} "
        f"MiB, this process's RSS {rss_before:.0f} -> {rss_after:.0f} MiB"
    )
    # Planned for its values each time, as the service's count is (mailings.CUSTOM_PLANS): asyncpg would otherwise
    # reuse one plan for any region after five runs.
    conn = await asyncpg.connect(dsn(url), server_settings={"plan_cache_mode": "force_custom_plan"})
    all_cases = [(case, 0) for case in cases()] + [(cases()[0], CHURN)]
    churned: list[int] = []
    try:
        async with sessions() as session:
            befores, sql_counts = [], []
            for case, churn in all_cases:
                ours, hand, sql, before = [], [], [], []
                counted = by_hand = by_sql = as_before = 0
                for i in range(repeats + 2):  # the first two warm the caches and are not counted
                    if churn:
                        churned.append((i * churn * 7) % members)
                        await conn.execute(CHURN_SQL, churned[-1], churn)
                    now = datetime.now(UTC)
                    started = time.perf_counter()
                    answer = await index.count(session, case.scope_type, case.scope_id, case.audience, now)
                    await session.commit()
                    ours.append((time.perf_counter() - started) * 1000)
                    if answer is None:
                        raise RuntimeError(f"{case.name}: the audience index could not answer")
                    counted = answer
                    started = time.perf_counter()
                    by_hand = await conn.fetchval(case.sql, *case.args)
                    hand.append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    by_sql = await count_audience(session, case.scope_type, case.scope_id, case.audience, now)
                    await session.commit()
                    sql.append((time.perf_counter() - started) * 1000)
                    if with_before:
                        started = time.perf_counter()
                        as_before = await conn.fetchval(case.before, *case.args)
                        before.append((time.perf_counter() - started) * 1000)
                    if not (counted == by_sql == by_hand) or (with_before and as_before != counted):
                        raise RuntimeError(
                            f"{case.name}: the index counted {counted:,}, the service's SQL {by_sql:,}, the SQL by "
                            f"hand {by_hand:,}" + (f", the SQL of before 0013 {as_before:,}" if with_before else "")
                        )
                name = case.name + (f", {churn:,} members changed before each count" if churn else "")
                sql_counts.append(f"{name} {fmt(percentile(sql[2:], 95))} ms")
                if with_before:
                    befores.append(f"{name} {fmt(percentile(before[2:], 95))} ms")
                p95 = percentile(ours[2:], 95)
                out.add(
                    Result(
                        f"{name} ({counted:,} people), p95",
                        p95,
                        "ms",
                        "the same count as one hand-written SQL query, p95",
                        percentile(hand[2:], 95),
                        target=f"<= {TARGET_MS:.0f} ms",
                        met=p95 <= TARGET_MS,
                        higher_is_better=False,
                    )
                )
        for first in churned:  # the members as loaded, for the next run
            await conn.execute(CHURN_SQL, first, CHURN)
    finally:
        await conn.close()
        await engine.dispose()
    out.notes.append(
        f"members bulk-loaded straight into {DB} (the query is what is measured); PostgreSQL as the "
        "launcher configures it (shared_buffers 128MB)"
    )
    out.notes.append(
        f"the count is the audience index's (services/notifications/audience_index.py: a refresh, then bitmaps): "
        f"loaded in {index.load_seconds:.1f} s, {index.nbytes() / 2**20:.1f} MiB of bitmaps and timestamps, "
        f"RSS of the process {rss_before:.0f} -> {rss_after:.0f} MiB; the index, the service's SQL count and the "
        "hand-written SQL agreed on every run of every combination"
    )
    out.notes.append(
        "in the same loop, the service's SQL count (mailings.count_audience: the page's count before the index, "
        "and its fallback), p95: " + "; ".join(sql_counts)
    )
    if with_before:
        out.notes.append(
            "in the same loop, the count by hand as it was before migration 0013 (wide rows, suppressions "
            "anti-joined, participation probed; the same counts), p95: " + "; ".join(befores)
        )
    return out
