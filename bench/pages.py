"""Benchmark 7 (issue 20): what an organiser waits for on a national network's pages.

Signs in as a network organiser and as the organiser of the biggest local group (signed session tokens, as
tests/support/organisers.py makes them; an OSDI API key for the people collection) and requests every organiser
page and export through the gateway, one request at a time, `repeats` times each after one warm-up: the member list
(each filter, a search, a later page), a member's page with its timeline, the CSV export, the long tail, the
campaigns list, the dashboard for the network, a region and a group (and its growth CSV), the digests page, the
meetings list, the check-in desk's search, the mailing audience count, the delivery log and the OSDI people
collection with a filter. Each page's p50 and p95 are printed beside the same percentiles of its main query written
by hand in SQL and run against the same database in the same run (asyncpg, one connection, the same repeats); the
ratio is of the p95s. Targets (issue 20): p95 <= 300 ms and <= 3x the hand-written query. Exports also report time
to first byte and the service's peak resident memory during the download (VmRSS sampled every 10 ms).

Before the pages, the same run measures each service's floor (`floors`): an address under its prefix that no route
answers, and a signed-in organiser's (or the API key's) request for an id that does not exist, answered at once
with a 404. Each page's note gives its service's signed-in floor, requested by the page's caller once after each of
the page's requests (so under the same load), and the best ratio the page could reach at the medians,
(floor + SQL) / SQL; where that is above 3 the page is marked "below the floor": no page through the gateway
answers within 3x of so quick a query. With the default 20 requests a page, the nearest-rank p95 is the slowest of
the 20 (10: also the slowest): one slow request (a consumer's batch, a garbage collection) is the page's p95;
`--repeats 60` makes it the third slowest, `--samples` prints every request's time.

The network comes from bench/network.py, generated once per stack (20,000 members with --quick, 1,000,000
without; a stack that holds a network already reuses it, whatever its size, and says so). On a network of the
services' own records only (`--own-records-only`) the pages that read a read model are skipped; on membership's
alone (`--membership-only`) every other service's page too; the run's notes name them.

    .venv/bin/python bench/pages.py [--quick] [--repeats N] [--samples] ["part of a page's name" ...]
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from bench import network
from bench.common import BenchOutcome, Result, asyncpg_dsn, launcher, percentile, rss_mib, say, service_pid
from shared.auth import OrganiserScope, issue

P95_TARGET_MS = 300.0
RATIO_TARGET = 3.0


READ_MODEL_PAGES = ("member page with timeline", "long tail", "dashboard")  # their data comes from consumers


@dataclass
class Page:
    name: str
    path: str
    who: str  # network | group | api
    service: str  # whose database the baseline runs on (and whose memory an export watches)
    baseline: list[tuple[str, list[Any]]]  # the hand-written SQL: statements run one after another
    export: bool = False
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def read_model(self) -> bool:
        """It reads what a service's consumers built from the history (not there with `--own-records-only`)."""
        return self.name.startswith(READ_MODEL_PAGES)


def _weeks(n: int = 12) -> list[tuple[datetime, datetime]]:
    today = datetime.now(UTC).date()
    monday = today - timedelta(days=today.weekday())
    starts = [monday - timedelta(weeks=n - 1 - i) for i in range(n)]
    return [(datetime.combine(s, datetime.min.time(), UTC), datetime.combine(s + timedelta(days=7),
                                                                              datetime.min.time(), UTC))
            for s in starts]


def growth_sql(where: str) -> str:
    """Members at the end of each of 12 weeks and joins in each, per region, in one scan of rpt_members."""
    cols = []
    for i, (b, e) in enumerate(_weeks()):
        cols.append(f"count(*) FILTER (WHERE joined_at < '{e.isoformat()}' AND (left_at IS NULL OR left_at >= "
                    f"'{e.isoformat()}')) AS m{i}")
        cols.append(f"count(*) FILTER (WHERE joined_at >= '{b.isoformat()}' AND joined_at < '{e.isoformat()}') AS j{i}")
    return f"SELECT region_id, {', '.join(cols)} FROM rpt_members WHERE {where} GROUP BY region_id"


def meetings_page(where: str, args: list[Any]) -> list[tuple[str, list[Any]]]:
    """The first page of the organisers' meetings: how many are still to come, 26 of them (or those over when
    there are none), and their RSVP counts."""
    counts = "(SELECT count(*) FILTER (WHERE r.status = 'going') FROM rsvps r WHERE r.meeting_id = m.id)"
    return [
        (f"SELECT count(*) FROM meetings m WHERE {where} AND ends_at >= now()", args),
        (f"SELECT m.*, {counts} FROM meetings m WHERE {where} AND ends_at >= now() ORDER BY starts_at, id LIMIT 26",
         args),
    ]


def pages_for(m: dict[str, Any], meeting_id: str, digest_organiser: str) -> list[Page]:
    group, region = m["biggest_group"], m["region_of_biggest"]
    sample = m["sample_members"][0]
    surname = sample["name"].split()[-1].lower()
    member_list = "SELECT * FROM members WHERE {w} ORDER BY joined_at DESC, id LIMIT 25"
    # the list counts up to 10,000 matches and says "more than" beyond (services/membership/organise.py)
    count = "SELECT count(*) FROM (SELECT id FROM members WHERE {w} LIMIT 10001) s"
    in_group = "EXISTS (SELECT 1 FROM member_groups g WHERE g.member_id = members.id AND g.group_id = $1)"

    def listing(where: str, args: list[Any]) -> list[tuple[str, list[Any]]]:
        return [(count.format(w=where), args), (member_list.format(w=where), args)]

    like = "(lower(name) LIKE $1 OR email_normalised LIKE $1)"
    since = (datetime.now(UTC) - timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tail_where = "status = 'active' AND actions = 0 AND attended = 0"
    return [
        Page("members: list", "/members", "network", "membership", listing("status <> 'erased'", [])),
        Page("members: page 40", "/members?page=40", "network", "membership",
             [(count.format(w="status <> 'erased'"), []),
              ("SELECT * FROM members WHERE status <> 'erased' ORDER BY joined_at DESC, id LIMIT 25 OFFSET 975", [])]),
        Page("members: search by name", f"/members?q={surname}", "network", "membership",
             listing(f"status <> 'erased' AND {like}", [f"%{surname}%"])),
        Page("members: search by email", f"/members?q={sample['email']}", "network", "membership",
             listing(f"status <> 'erased' AND {like}", [f"%{sample['email']}%"])),
        Page("members: region filter", f"/members?region_id={region}", "network", "membership",
             listing("status <> 'erased' AND region_id = $1", [region])),
        Page("members: group filter", f"/members?group_id={group}", "network", "membership",
             listing(f"status <> 'erased' AND {in_group}", [group])),
        Page("members: interest filter", "/members?interest=racism-at-work", "network", "membership",
             listing("status <> 'erased' AND $1 = ANY(interests)", ["racism-at-work"])),
        Page("members: level filter", "/members?engagement_level=organise", "network", "membership",
             listing("status <> 'erased' AND engagement_level = $1", ["organise"])),
        Page("members: not confirmed", "/members?confirmed=no", "network", "membership",
             listing("status <> 'erased' AND confirmed_at IS NULL", [])),
        Page("members: status left", "/members?status=left", "network", "membership",
             listing("status <> 'erased' AND status = $1", ["left"])),
        Page("members: group organiser's list", "/members", "group", "membership",
             listing(f"status <> 'erased' AND {in_group}", [group])),
        Page("members: group organiser's search", f"/members?q={surname}", "group", "membership",
             listing(f"status <> 'erased' AND {in_group} AND (lower(name) LIKE $2 OR email_normalised LIKE $2)",
                     [group, f"%{surname}%"])),
        Page("member page with timeline", f"/members/{m['most_active_member']}", "network", "membership", [
            ("SELECT * FROM members WHERE id = $1", [m["most_active_member"]]),
            ("SELECT a.*, pm.title, pc.title FROM member_activity a LEFT JOIN public_meetings pm ON pm.meeting_id "
             "= a.subject_id LEFT JOIN public_campaigns pc ON pc.campaign_id = a.subject_id WHERE a.member_id = $1",
             [m["most_active_member"]]),
        ]),
        Page("members CSV export (group)", "/members/export.csv", "group", "membership",
             [("SELECT m.*, (SELECT array_agg(g.group_id) FROM member_groups g WHERE g.member_id = m.id) FROM members "
               "m WHERE status <> 'erased' AND EXISTS (SELECT 1 FROM member_groups g WHERE g.member_id = m.id AND "
               "g.group_id = $1) ORDER BY joined_at, id", [group])], export=True),
        Page("members CSV export (network)", "/members/export.csv", "network", "membership",
             [("SELECT m.*, (SELECT array_agg(g.group_id) FROM member_groups g WHERE g.member_id = m.id) FROM members "
               "m WHERE status <> 'erased' ORDER BY joined_at, id", [])], export=True),
        Page("long tail (network)", "/campaigns/organise/long-tail", "network", "campaigns", [
            (f"SELECT region_id, g, count(*) FROM members LEFT JOIN LATERAL unnest(group_ids) g ON true WHERE "
             f"{tail_where} GROUP BY 1, 2", []),
            (f"SELECT * FROM members WHERE {tail_where} ORDER BY joined_at, member_id LIMIT 500", []),
        ]),
        Page("long tail (group)", "/campaigns/organise/long-tail", "group", "campaigns", [
            (f"SELECT count(*) FROM members WHERE {tail_where} AND $1 = ANY(group_ids)", [group]),
            (f"SELECT * FROM members WHERE {tail_where} AND $1 = ANY(group_ids) ORDER BY joined_at, member_id "
             f"LIMIT 500", [group]),
        ]),
        # 25 a page, live first, the latest launched first, each with its actions counted (letters once confirmed)
        Page("campaigns list (network)", "/campaigns/organise", "network", "campaigns", [
            ("SELECT c.*, (SELECT count(*) FROM actions x WHERE x.campaign_id = c.id AND (x.kind <> 'write_to_mp' OR "
             "x.letter_confirmed_at IS NOT NULL)) FROM campaigns c ORDER BY status DESC, launched_at DESC, id LIMIT 26",
             [])]),
        Page("dashboard (network)", "/dashboard", "network", "campaigns", [(growth_sql("true"), [])]),
        Page("dashboard (region)", f"/dashboard?region={region}", "network", "campaigns",
             [(growth_sql("region_id = $1"), [region])]),
        Page("dashboard (group)", "/dashboard", "group", "campaigns",
             [(growth_sql("$1 = ANY(group_ids)"), [group])]),
        Page("dashboard growth CSV (network)", "/dashboard/export/growth.csv", "network", "campaigns",
             [(growth_sql("true"), [])], export=True),
        Page("digests page", "/notifications/organise/digests", "digest", "notifications", [
            ("SELECT * FROM digest_subscriptions WHERE organiser_id = $1", [digest_organiser]),
            ("SELECT * FROM digests WHERE organiser_id = $1 ORDER BY created_at DESC LIMIT 20", [digest_organiser]),
        ]),
        # 25 a page: the meetings still to come (soonest first), then those over (latest first), with RSVP counts
        Page("meetings list (network)", "/events/organise", "network", "events", meetings_page("true", [])),
        Page("meetings list (group)", "/events/organise", "group", "events",
             meetings_page("scope_type = 'group' AND scope_id = $1", [group])),
        Page("check-in desk search", f"/events/organise/{meeting_id}/check-in?search={surname}", "group", "events", [
            ("SELECT * FROM rsvps WHERE meeting_id = $1 AND status IN ('going', 'waitlisted') AND (lower(name) LIKE $2 "
             "OR lower(email) LIKE $2) ORDER BY status, waitlist_position, lower(name)", [meeting_id, f"%{surname}%"]),
        ]),
        Page("mailing audience count (network, level)", "/notifications/organise/mailings/count?level=organise",
             "network", "notifications", [
                 ("SELECT count(*) FROM recipients r WHERE r.email_consent AND r.status = 'confirmed' AND "
                  "r.engagement_level = $1 AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.email = "
                  "lower(r.email))", ["organise"])]),
        Page("mailing audience count (group)", f"/notifications/organise/mailings/count?unit={group}", "group",
             "notifications", [
                 ("SELECT count(*) FROM recipients r WHERE r.email_consent AND r.status = 'confirmed' AND "
                  "$1 = ANY(r.group_ids)", [group])]),
        Page("delivery log", "/notifications/organise/deliveries", "network", "notifications", [
            ("SELECT * FROM deliveries ORDER BY created_at DESC LIMIT 50", [])]),
        Page("OSDI people, filtered", f"/api/v2/people?filter=modified_date gt '{since}'", "api", "membership",
             listing("status <> 'erased' AND updated_at > $1", [datetime.now(UTC) - timedelta(days=90)])),
    ]


@dataclass
class Floor:
    """What a request through the gateway costs before any page work, for one service: `path` asked `repeats` times
    by `who` (None: nobody signed in) answers `status` at once."""

    name: str
    path: str
    who: str | None
    service: str
    status: int


NOBODY = "00000000-0000-4000-8000-000000000000"  # an id no row has


def floors() -> list[Floor]:
    """For each service: an address under its prefix that no route answers (the gateway, the server, the
    middlewares and FastAPI's routing, then the 404 page in the shared layout), and a signed-in organiser's request
    for something that does not exist (the same, plus the session's signature and revocation check and one lookup by
    primary key that finds nothing). No page can answer faster than the second; a page's ratio to its SQL cannot come
    under (floor + SQL) / SQL."""
    unrouted = "/-/-/-/-/-"
    return [
        Floor("membership: no route", f"/members{unrouted}", None, "membership", 404),
        Floor("membership: organiser, no such member", f"/members/{NOBODY}", "network", "membership", 404),
        Floor("membership: API key, no such person", f"/api/v2/people/{NOBODY}", "api", "membership", 404),
        Floor("events: no route", f"/events/organise{unrouted}", None, "events", 404),
        Floor("events: organiser, no such meeting", f"/events/organise/{NOBODY}/check-in", "network", "events", 404),
        Floor("campaigns: no route", f"/campaigns/organise{unrouted}", None, "campaigns", 404),
        Floor("campaigns: organiser, no such campaign", f"/campaigns/organise/campaigns/{NOBODY}", "network",
              "campaigns", 404),
        Floor("notifications: no route", f"/notifications/organise{unrouted}", None, "notifications", 404),
        Floor("notifications: organiser, no such digest", f"/notifications/organise/digests/{NOBODY}", "network",
              "notifications", 404),
    ]


def floor_of(page: Page) -> str:
    """The name of the floor a page is compared with: its service's signed-in floor (the API key's for OSDI)."""
    return next(f.name for f in floors() if f.service == page.service and f.who is not None
                and (f.who == "api") == (page.who == "api"))


class RssWatch:
    """The highest VmRSS of a process while the block runs, sampled every 10 ms from a thread."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.peak, self.before = pid, 0.0, rss_mib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            self._stop.wait(0.01)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


async def timed_get(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> tuple[float, float, int, int]:
    """(ms to the first byte of the body, ms to the last, status, bytes)."""
    started = time.perf_counter()
    first = None
    size = 0
    async with client.stream("GET", path, headers=headers) as response:
        async for chunk in response.aiter_raw():
            if first is None:
                first = time.perf_counter()
            size += len(chunk)
        status = response.status_code
    done = time.perf_counter()
    return ((first or done) - started) * 1000, (done - started) * 1000, status, size


async def measure_floors(client: httpx.AsyncClient, callers: dict[str, dict[str, str]], repeats: int,
                         outcome: BenchOutcome) -> None:
    """Each floor's p50 and p95 (after one warm-up), as results of their own. (Each page's note has its floor
    measured again in the page's own loop, as the page's caller, one request after each of the page's.)"""
    medians: dict[str, float] = {}
    for floor in floors():
        headers = {"Accept": "text/html", **(callers[floor.who] if floor.who else {})}
        await timed_get(client, floor.path, headers)
        totals = []
        for _ in range(repeats):
            _, total, status, size = await timed_get(client, floor.path, headers)
            if status != floor.status:
                raise RuntimeError(f"floor {floor.name}: {floor.path} answered {status}, not {floor.status}")
            totals.append(total)
        medians[floor.name] = percentile(totals, 50)
        outcome.add(Result(f"floor: {floor.name} p95", percentile(totals, 95), "ms",
                           note=f"p50 {medians[floor.name]:.1f} ms; HTTP {status}, {size:,} bytes",
                           higher_is_better=False))


async def hand_written(conn: asyncpg.Connection, statements: list[tuple[str, list[Any]]]) -> float:
    started = time.perf_counter()
    for sql, args in statements:
        await conn.fetch(sql, *args)
    return (time.perf_counter() - started) * 1000


async def setup(m: dict[str, Any], dbs: dict[str, asyncpg.Connection]) -> tuple[str, str]:
    """The busiest meeting of the biggest group (the check-in desk's), and a network organiser with a weekly
    digest subscription and 20 past digests in notifications (the digests page's)."""
    meeting_id = await dbs["events"].fetchval(
        "SELECT meeting_id FROM rsvps r JOIN meetings m ON m.id = r.meeting_id WHERE m.scope_id = $1 "
        "GROUP BY meeting_id ORDER BY count(*) DESC LIMIT 1", m["biggest_group"])
    if m.get("most_active_member") is None:
        m["most_active_member"] = await dbs["membership"].fetchval(
            "SELECT member_id FROM member_activity GROUP BY member_id ORDER BY count(*) DESC LIMIT 1")
    n = dbs["notifications"]
    organiser = await n.fetchval("SELECT organiser_id FROM organisers WHERE email = 'bench-pages@bench.example.org'")
    if organiser is None:
        organiser = str(uuid.uuid4())
        now = datetime.now(UTC)
        await n.execute(
            "INSERT INTO organisers (organiser_id, email, name, digest_period, feed_token, feed_token_created_at, "
            "created_at, updated_at) VALUES ($1, 'bench-pages@bench.example.org', 'Bench Organiser', 'weekly', $2, "
            "$3, $3, $3)", organiser, uuid.uuid4().hex + uuid.uuid4().hex[:16], now)
        await n.execute(
            "INSERT INTO digest_subscriptions (organiser_id, role, scope_type, scope_id, next_digest_at, created_at) "
            "VALUES ($1, 'organiser', 'network', '', $2, $2)", organiser, now + timedelta(days=7))
    return meeting_id, organiser


async def sign_in(m: dict[str, Any], membership: asyncpg.Connection, client: httpx.AsyncClient,
                  digest_organiser: str) -> dict[str, dict[str, str]]:
    """Headers for each kind of caller: active organiser accounts in membership (as tests/membership/conftest.py
    makes them) with signed sessions, and an API key made on the API keys page by the network organiser."""
    secret = launcher.secret_key()
    headers: dict[str, dict[str, str]] = {}
    for who, oid, scope_type, scope_id in (
        ("network", str(uuid.uuid4()), "network", None),
        ("group", str(uuid.uuid4()), "group", m["biggest_group"]),
        ("digest", digest_organiser, "network", None),
    ):
        await membership.execute(
            "INSERT INTO organisers (id, email_normalised, name, scope_type, scope_id, status) VALUES "
            "($1, $2, 'Bench Organiser', $3, $4, 'active') ON CONFLICT (id) DO NOTHING",
            oid, f"bench-pages-{oid}@bench.example.org", scope_type, scope_id)
        token = issue(secret, OrganiserScope(organiser_id=oid, scope_type=scope_type, scope_id=scope_id))
        headers[who] = {"Authorization": f"Bearer {token}"}
    created = await client.post("/organisers/api-keys", headers=headers["network"],
                                data={"name": f"Bench {uuid.uuid4().hex[:6]}", "scope_type": "network",
                                      "scope_id": ""})
    if created.status_code != 201:
        raise RuntimeError(f"no API key: {created.status_code} {created.text[:200]}")
    key = created.text.split('<code id="new-api-key">')[1].split("</code>")[0]
    headers["api"] = {"OSDI-API-Token": key}
    return headers


async def run(quick: bool, repeats: int | None = None, only: list[str] | None = None, samples: bool = False
              ) -> BenchOutcome:
    outcome = BenchOutcome("Organiser pages")
    m = network.read_manifest()
    if m is None:
        m = await network.generate(network.QUICK_MEMBERS if quick else network.FULL_MEMBERS)
    elif m["members"] != (network.QUICK_MEMBERS if quick else network.FULL_MEMBERS):
        say(f"pages: this stack holds a network of {m['members']:,} members (generated earlier); measuring that one")
    repeats = repeats or (20 if quick else 10)
    outcome.sizes.update({k: f"{m[k]:,}" for k in ("members", "actions", "meetings", "rsvps", "deliveries")
                          if isinstance(m.get(k), int)})
    outcome.sizes["biggest group"] = f"{m['biggest_group_members']:,} members"
    outcome.sizes["requests per page"] = repeats
    # The hand-written queries are planned for their own values every time: asyncpg prepares each statement, and
    # from its sixth run PostgreSQL may switch to a generic plan (for the group organiser's search, one that reads
    # all of a big group's members by id: 0.6-2 s against 0.15-0.3), which made a page's ratio look met.
    dbs = {s: await asyncpg.connect(asyncpg_dsn(s), server_settings={"plan_cache_mode": "force_custom_plan"})
           for s in launcher.SERVICES}
    misses: list[str] = []
    below_floor: list[str] = []
    try:
        meeting_id, digest_organiser = await setup(m, dbs)
        pages = [p for p in pages_for(m, meeting_id, digest_organiser) if not only or any(o in p.name for o in only)]
        if not m.get("read_models", True) and (skipped := [p.name for p in pages if p.read_model]):
            pages = [p for p in pages if not p.read_model]
            outcome.notes.append("a network of the services' own records only (bench/network.py "
                                 "--own-records-only): not measured, as their data comes from the history's "
                                 "consumers: " + ", ".join(skipped))
        if m.get("membership_only") and (skipped := [p.name for p in pages if p.service != "membership"]):
            pages = [p for p in pages if p.service == "membership"]
            outcome.notes.append("a network of membership's records only (bench/network.py --membership-only): "
                                 "not measured, as campaigns, events and notifications hold nothing: "
                                 + ", ".join(skipped))
        async with httpx.AsyncClient(base_url=launcher.GATEWAY_URL, timeout=600) as client:
            callers = await sign_in(m, dbs["membership"], client, digest_organiser)
            await measure_floors(client, callers, repeats, outcome)
            for page in pages:
                headers = callers[page.who]
                conn = dbs[page.service]
                first_ms, _, status, size = await timed_get(client, page.path, headers)  # warm-up
                if status != 200:
                    say(f"pages: {page.name}: {page.path} answered {status}; skipped")
                    outcome.notes.append(f"{page.name}: HTTP {status}")
                    continue
                await hand_written(conn, page.baseline)
                floor = next(f for f in floors() if f.name == floor_of(page))
                floor_headers = {"Accept": "text/html", **headers}
                await timed_get(client, floor.path, floor_headers)
                totals, firsts, sql, floor_totals = [], [], [], []
                peak = 0.0
                pid = service_pid(page.service)
                for _ in range(repeats if not page.export else max(3, repeats // 4)):
                    with RssWatch(pid if page.export else None) as watch:
                        first, total, status, size = await timed_get(client, page.path, headers)
                    peak = max(peak, watch.peak)
                    totals.append(total)
                    firsts.append(first)
                    sql.append(await hand_written(conn, page.baseline))
                    # the floor in the same loop, as the same caller: what this page could cost at least just now
                    _, floor_ms, floor_status, _ = await timed_get(client, floor.path, floor_headers)
                    if floor_status != floor.status:
                        raise RuntimeError(f"floor {floor.name} as {page.who}: {floor.path} answered {floor_status}")
                    floor_totals.append(floor_ms)
                p50, p95 = percentile(totals, 50), percentile(totals, 95)
                if samples:
                    say(f"pages: {page.name}: " + " ".join(f"{t:.1f}" for t in totals) + " ms; SQL "
                        + " ".join(f"{t:.1f}" for t in sql) + " ms")
                b50, b95 = percentile(sql, 50), percentile(sql, 95)
                ratio = p95 / b95 if b95 else float("inf")
                met = p95 <= P95_TARGET_MS and ratio <= RATIO_TARGET
                note = f"p50 {p50:.0f} ms against {b50:.1f} ms; {size:,} bytes"
                # A page costs at least its floor and its SQL: at the medians, the best ratio it could reach.
                f50 = percentile(floor_totals, 50)
                best = (f50 + b50) / b50 if b50 else float("inf")
                note += f"; floor p50 {f50:.1f} ms, best reachable ratio {best:.1f}"
                if best > RATIO_TARGET:
                    note += " (below the floor: 3x unreachable)"
                    below_floor.append(page.name)
                if page.export:
                    note += (f"; first byte p50 {percentile(firsts, 50):.0f} ms; {page.service} RSS peak "
                             f"{peak:.0f} MiB (before {rss_mib(pid):.0f})")
                outcome.add(Result(f"{page.name} p95", p95, "ms", "hand-written SQL p95", b95, "ms",
                                   "p95 <= 300 ms and <= 3x the SQL", met, note, higher_is_better=False))
                if not met:
                    misses.append(page.name)
    finally:
        for conn in dbs.values():
            await conn.close()
    if below_floor:
        outcome.notes.append("pages whose SQL is too quick for 3x through the gateway (floor + SQL > 3x SQL at the "
                             "medians): " + ", ".join(below_floor))
    if misses:
        outcome.notes.append("pages that miss a target: " + ", ".join(misses))
        say("pages that miss a target: " + ", ".join(misses))
    else:
        say("every page met both targets")
    return outcome


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="bench/pages.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--samples", action="store_true", help="print every request's time, in order")
    parser.add_argument("only", nargs="*", help="only pages whose name contains one of these")
    args = parser.parse_args()
    outcome = asyncio.run(run(args.quick, args.repeats, args.only, args.samples))
    for r in outcome.results:
        print(r.line())
    for note in outcome.notes:
        print(note)


if __name__ == "__main__":
    main()
