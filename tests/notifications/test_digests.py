"""Organisers' digests: scoped to their region or group, built on their schedule, emailed once and announced."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from services.notifications import queries
from services.notifications.digest_schedule import next_digest_time
from shared import topics
from shared.events.envelope import Envelope
from tests.notifications.conftest import poll
from tests.support.kafka import wait_for_records

ROOT = Path(__file__).resolve().parents[2]
LONDON = ZoneInfo("Europe/London")


async def _activity_rows(db, subject_ids: list[str]) -> int:
    return await db.fetchval("SELECT count(*) FROM activity WHERE subject_id = ANY($1::text[])", subject_ids)


async def _organiser_ready(db, organiser_id: str) -> bool:
    return bool(await db.fetchval("SELECT email IS NOT NULL FROM organisers WHERE organiser_id = $1", organiser_id))


async def _digest(db, digest_id: str):
    row = await db.fetchrow("SELECT * FROM digests WHERE id = $1", digest_id)
    assert row is not None
    return row


async def _latest_digest_of(db, organiser_id: str):
    return await db.fetchrow(
        "SELECT * FROM digests WHERE organiser_id = $1 ORDER BY created_at DESC LIMIT 1", organiser_id
    )


async def test_a_regions_digest_has_its_news_and_nothing_from_another_region(
    notifications_server, network, db, catcher
):
    west = await network.unit("region", "West Midlands")
    east = await network.unit("region", "East Midlands")
    selly = await network.unit("group", "Selly Oak", west)
    kings = await network.unit("group", "Kings Heath", west)
    derby = await network.unit("group", "Derby", east)
    # The west organiser's key arrives after their role: the role waits for it, then is mirrored.
    west_org, west_email = await network.organiser("region", west, key_first=False, name="Wendy West")
    east_org, east_email = await network.organiser("region", east, name="Ed East")
    group_org, _ = await network.organiser("group", selly, name="Sam Selly")
    network_org, _ = await network.organiser("network", None, name="Nat Network")
    members = [
        (await network.member(region_id=west, group_id=selly, level=level))[0]
        for level in ("supporter", "supporter", "active")
    ]
    members.append((await network.member(region_id=east, group_id=derby, level="leader"))[0])
    west_meeting = await network.meeting("Selly Oak planning", "group", selly)
    east_meeting = await network.meeting("Derby street stall", "group", derby)
    await network.rsvp(west_meeting)
    await network.rsvp(west_meeting)
    await network.rsvp(west_meeting, status="waitlisted")
    await network.rsvp(east_meeting)
    campaign = await network.campaign("Fair Pay Now")
    for _ in range(3):
        await network.action(campaign, region_id=west, group_id=kings)
    await network.action(campaign, region_id=east, group_id=derby)

    subjects = [*members, west_meeting, east_meeting, campaign]
    await poll(lambda: _activity_rows_at_least(db, subjects, 4 + 2 + 4 + 1 + 4))
    for organiser in (west_org, east_org, group_org, network_org):
        await poll(lambda o=organiser: _organiser_ready(db, o))
    await poll(lambda: db.fetchval("SELECT count(*) = 5 FROM units WHERE name LIKE $1", f"% {network.tag}"))

    digests = notifications_server.digests
    assert await digests.run_now(organiser_id=west_org) == 1
    west_digest = await _latest_digest_of(db, west_org)
    text = west_digest["body_text"]
    tag = network.tag
    assert f"West Midlands {tag}: your weekly digest" in west_digest["title"]
    assert "3 joined" in text and "Supporter: 2" in text and "Active: 1" in text
    assert f"Selly Oak planning {tag}" in text
    assert "2 going of 40 places, 1 on the waitlist" in text
    assert f"Fair Pay Now {tag}: 3 (3 petition)" in text
    assert f"Kings Heath {tag}" in text and f"Selly Oak {tag}" in text  # what the region's groups are doing
    for elsewhere in (f"East Midlands {tag}", f"Derby {tag}", f"Derby street stall {tag}", "Leader"):
        assert elsewhere not in text
        assert elsewhere not in west_digest["body_html"]
        assert elsewhere not in json.dumps(json.loads(west_digest["content"]))

    # Emailed to the organiser (once), and announced on Kafka.
    [mail] = await catcher.wait_for(west_email)
    assert mail["subject"] == west_digest["title"]
    assert "Dear Wendy," in mail["text"] and f"Selly Oak planning {tag}" in mail["text"]
    assert f"Derby street stall {tag}" not in mail["html"]
    [record] = await wait_for_records(
        topics.NOTIFICATIONS_DIGESTS, lambda r: Envelope.from_bytes(r.value).data["digest_id"] == west_digest["id"], 1
    )
    published = Envelope.from_bytes(record.value)
    assert published.type == "DigestPublished" and record.key.decode() == west_org
    assert published.data["scope_type"] == "region" and published.data["scope_id"] == west
    assert published.data["entries"] == west_digest["entries"] > 0

    # The other region's organiser sees theirs, and none of the west's.
    assert await digests.run_now(organiser_id=east_org) == 1
    east_text = (await _latest_digest_of(db, east_org))["body_text"]
    assert f"Derby street stall {tag}" in east_text and "1 going" in east_text and "Leader: 1" in east_text
    assert f"Fair Pay Now {tag}: 1 (1 petition)" in east_text
    for elsewhere in (f"West Midlands {tag}", f"Selly Oak {tag}", f"Kings Heath {tag}"):
        assert elsewhere not in east_text

    # A group's organiser: their group's news, and what the other groups of their region are working on.
    assert await digests.run_now(organiser_id=group_org) == 1
    group_text = (await _latest_digest_of(db, group_org))["body_text"]
    assert f"Selly Oak planning {tag}" in group_text and "3 joined" in group_text
    assert "OTHER GROUPS IN YOUR REGION" in group_text and f"Kings Heath {tag}: 3 actions" in group_text
    assert f"Derby {tag}" not in group_text

    # The whole network's organiser: each region at a glance.
    assert await digests.run_now(organiser_id=network_org) == 1
    network_text = (await _latest_digest_of(db, network_org))["body_text"]
    assert "AROUND THE NETWORK" in network_text
    assert f"West Midlands {tag}: 3 new members; 3 actions; meetings: Selly Oak planning {tag}" in network_text
    assert f"East Midlands {tag}: 1 new member; 1 action; meetings: Derby street stall {tag}" in network_text

    await catcher.settle(west_email, 1.0)
    assert len(await catcher.messages(west_email)) == 1


async def _activity_rows_at_least(db, subjects: list[str], expected: int) -> bool:
    return await _activity_rows(db, subjects) >= expected


async def test_a_due_digest_is_built_once_and_the_next_one_scheduled(notifications_server, network, db, catcher):
    region = await network.unit("region", "Black Country")
    group = await network.unit("group", "Dudley", region)
    organiser_id, email = await network.organiser("region", region)
    member_id, _ = await network.member(region_id=region, group_id=group, level="active")
    await poll(lambda: _organiser_ready(db, organiser_id))
    await poll(lambda: _activity_rows_at_least(db, [member_id], 1))
    await db.execute(
        "UPDATE digest_subscriptions SET next_digest_at = now() - interval '1 minute' WHERE organiser_id = $1",
        organiser_id,
    )

    digests = notifications_server.digests
    assert await digests.run_due() >= 1
    assert await digests.run_due() == 0  # nothing is due twice
    [digest] = await db.fetch("SELECT * FROM digests WHERE organiser_id = $1", organiser_id)
    assert "1 joined" in digest["body_text"] and "Active: 1" in digest["body_text"]
    sub = await db.fetchrow("SELECT * FROM digest_subscriptions WHERE organiser_id = $1", organiser_id)
    next_local = sub["next_digest_at"].astimezone(LONDON)
    assert (next_local.weekday(), next_local.hour, next_local.minute) == (0, 7, 0)  # weekly: Monday 07:00
    assert sub["last_digest_at"] is not None
    await catcher.wait_for(email)

    # Nothing new since: the next pass has nothing to say, and sends nothing.
    await db.execute(
        "UPDATE digest_subscriptions SET next_digest_at = now() - interval '1 minute' WHERE organiser_id = $1",
        organiser_id,
    )
    assert await digests.run_due() == 0
    assert len(await db.fetch("SELECT id FROM digests WHERE organiser_id = $1", organiser_id)) == 1


def test_digest_times_are_seven_in_the_morning_network_time_across_summer_time():
    before_clocks_change = datetime(2027, 3, 27, 12, 0, tzinfo=UTC)  # Saturday; BST starts Sunday 28 March
    daily = next_digest_time("daily", before_clocks_change)
    assert daily.astimezone(LONDON).isoformat() == "2027-03-28T07:00:00+01:00"
    weekly = next_digest_time("weekly", before_clocks_change)
    assert weekly.astimezone(LONDON).isoformat() == "2027-03-29T07:00:00+01:00"
    monday_seven = datetime(2027, 3, 29, 6, 0, tzinfo=UTC)  # exactly Monday 07:00 BST: the next is a week on
    assert next_digest_time("weekly", monday_seven) == monday_seven + timedelta(days=7)


async def test_send_digests_command_builds_everyones_digest_now(notifications_server, network, db, digests_db_url):
    region = await network.unit("region", "Staffordshire")
    organiser_id, _ = await network.organiser("region", region)
    member_id, _ = await network.member(region_id=region, group_id=None)
    await poll(lambda: _organiser_ready(db, organiser_id))
    await poll(lambda: _activity_rows_at_least(db, [member_id], 1))
    env = {
        **os.environ,
        "DATABASE_URL": digests_db_url,
        "SECRET_KEY": notifications_server.settings.secret_key,
        "LOG_JSON": "false",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.notifications",
        "send-digests",
        "--now",
        "--organiser",
        organiser_id,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    assert "1 digest(s) built" in stdout.decode()
    assert await db.fetchval("SELECT count(*) FROM digests WHERE organiser_id = $1", organiser_id) == 1


# A pass reads each window once for every scope: each scope must get exactly the rows its own query selects. ----

_WINDOW_START = datetime(2001, 3, 5, 7, 0, tzinfo=UTC)  # a week nothing else in the test database happened in
_WINDOW_END = _WINDOW_START + timedelta(days=7)


async def _reference(session, digests, scope, start, end):
    """What a digest of `scope` said before passes: one query per section, filtered by Scope.condition."""
    from sqlalchemy import text

    params = {"start": start, "end": end, "scope_id": scope.scope_id}
    window = "a.occurred_at >= :start AND a.occurred_at < :end"
    levels = (
        await session.execute(
            text(
                "SELECT coalesce(a.detail->>'engagement_level', '') AS level, count(*) AS n FROM activity a "
                f"WHERE a.kind = 'member_joined' AND {window} AND {scope.condition()} "
                "AND NOT jsonb_exists(a.detail, 'gone') GROUP BY 1 ORDER BY 2 DESC, 1"
            ),
            params,
        )
    ).all()
    actions = (
        await session.execute(
            text(
                "SELECT a.subject_id, a.detail->>'kind' AS ask_kind, count(*) AS n FROM activity a "
                f"WHERE a.kind = 'action_taken' AND {window} AND {scope.condition()} GROUP BY 1, 2"
            ),
            params,
        )
    ).all()
    launched = (
        await session.execute(
            text(
                "SELECT a.subject_id, a.detail->>'title' AS title FROM activity a "
                f"WHERE a.kind = 'campaign_launched' AND {window} AND {scope.condition()} ORDER BY a.occurred_at"
            ),
            params,
        )
    ).all()
    if scope.scope_type == "group":
        parent = await session.scalar(text("SELECT parent_id FROM units WHERE unit_id = :id"), {"id": scope.scope_id})
        units_sql = "u.kind = 'group' AND u.parent_id = :parent AND u.unit_id <> :scope_id"
    elif scope.scope_type == "region":
        parent, units_sql = scope.scope_id, "u.kind = 'group' AND u.parent_id = :parent"
    else:
        parent, units_sql = None, "u.kind = 'region'"
    if units_sql.startswith("u.kind = 'group'"):
        match = "(a.group_id = u.unit_id OR jsonb_exists(coalesce(a.detail->'group_ids', '[]'), u.unit_id))"
    else:
        match = (
            "(a.region_id = u.unit_id OR a.group_id IN (SELECT g.unit_id FROM units g WHERE g.parent_id = u.unit_id))"
        )
    elsewhere = []
    if parent is not None or scope.scope_type == "network":
        elsewhere = (
            await session.execute(
                text(
                    "SELECT u.name, count(*) FILTER (WHERE a.kind = 'member_joined') AS new_members, "
                    "count(*) FILTER (WHERE a.kind = 'action_taken') AS actions, "
                    "coalesce(array_agg(DISTINCT a.detail->>'title') FILTER (WHERE a.kind = 'meeting_scheduled'), "
                    "'{}') AS meetings FROM units u JOIN activity a ON " + match + f" WHERE {units_sql} AND {window} "
                    "AND a.kind IN ('member_joined', 'action_taken', 'meeting_scheduled', 'campaign_launched') "
                    "AND NOT (a.kind = 'member_joined' AND jsonb_exists(a.detail, 'gone')) "
                    "GROUP BY u.unit_id, u.name ORDER BY u.name"
                ),
                {**params, "parent": parent},
            )
        ).all()
    meetings = await queries.upcoming_meetings(session, scope, end, window_start=start)
    return {
        "levels": [(r.level, r.n) for r in levels],
        "actions": sorted((r.subject_id, r.ask_kind or "action", r.n) for r in actions),
        "launched": [(r.subject_id, r.title) for r in launched],
        "elsewhere": [(r.name, r.new_members, r.actions, sorted(r.meetings)) for r in elsewhere],
        "meetings": [(m["meeting_id"], m["going"], m["waitlisted"], m["new_rsvps"]) for m in meetings],
    }


def _sections(content):
    return {
        "levels": [(lv["level"], lv["count"]) for lv in content["new_members"]["by_level"]],
        "actions": sorted(
            (c["campaign_id"], kind, n) for c in content["actions"]["campaigns"] for kind, n in c["by_kind"].items()
        ),
        "launched": [(c["campaign_id"], c["title"]) for c in content["campaigns_launched"]],
        "elsewhere": [
            (u["name"], u["new_members"], u["actions"], u["meetings"]) for u in content["elsewhere"]["units"]
        ],
        "meetings": [
            (m["meeting_id"], m["going"], m["waitlisted"], m["new_rsvps"]) for m in content["upcoming_meetings"]
        ],
    }


async def test_a_pass_gives_each_scope_exactly_what_its_own_queries_would(notifications_server, db):
    from services.notifications.digests import DigestPass
    from services.notifications.queries import Scope

    ids: dict[str, str] = {}

    def id_of(name: str) -> str:
        return ids.setdefault(name, f"{name}-{uuid.uuid4().hex[:12]}")

    r1, r2, g1, g2, g3, g4, s1 = (id_of(n) for n in ("r1", "r2", "g1", "g2", "g3", "g4", "s1"))
    for unit_id, kind, name, parent in (
        (r1, "region", "Region one", None),
        (r2, "region", "Region two", None),
        (g1, "group", "Group one", r1),
        (g2, "group", "Group two", r1),
        (g3, "group", "Group three", r2),
        (g4, "group", "Group without a region", None),
        (s1, "subteam", "Sub-team of group one", g1),
    ):
        await db.execute(
            "INSERT INTO units (unit_id, kind, name, parent_id) VALUES ($1, $2, $3, $4)", unit_id, kind, name, parent
        )
    at = _WINDOW_START + timedelta(days=2)
    c1, c2, c3 = id_of("c1"), id_of("c2"), id_of("c3")
    m1, m2, m3, m4 = id_of("m1"), id_of("m2"), id_of("m3"), id_of("m4")

    def meeting(title: str, group: str | None, days: int) -> dict:
        starts = _WINDOW_END + timedelta(days=days)
        return {"title": title, "kind": "in_person", "scope_type": "group", "scope_id": group, "capacity": 40,
                "starts_at": starts.isoformat(), "ends_at": (starts + timedelta(hours=2)).isoformat(),
                "timezone": "Europe/London", "venue": "Hall", "public_url": "http://example.org/m"}  # fmt: skip

    rows = [
        # joins: several groups (one of them in another region), a region only, a group whose region is resolved
        # from the units, a group without a region, and group_ids of unusual shapes (jsonb_exists decides)
        ("member_joined", at, r1, g1, None, {"engagement_level": "supporter", "group_ids": [g1, g2]}),
        ("member_joined", at, None, g2, None, {"engagement_level": "active", "group_ids": [g2]}),
        ("member_joined", at, r1, None, None, {"group_ids": []}),
        ("member_joined", at, r2, g3, None, {"engagement_level": "supporter", "group_ids": [g3, g1, g1]}),
        ("member_joined", at, None, g4, None, {"engagement_level": "leader", "group_ids": {g2: True}}),
        ("member_joined", at, None, None, None, {"engagement_level": "leader", "group_ids": g3}),
        ("member_joined", at, None, None, None, {"engagement_level": "active", "group_ids": [5, [g2], g4]}),
        ("member_joined", at, r1, s1, None, {"engagement_level": "active"}),
        # members who left or were erased since: not new members anywhere
        ("member_joined", at, r1, g1, None, {"engagement_level": "supporter", "group_ids": [g1], "gone": "left"}),
        ("member_joined", at, r2, g3, None, {"engagement_level": "leader", "group_ids": [g3], "gone": "erased"}),
        ("member_joined", _WINDOW_START - timedelta(seconds=1), r1, g1, None, {"group_ids": [g1]}),  # before
        ("member_joined", _WINDOW_END, r1, g1, None, {"group_ids": [g1]}),  # at the end: the next digest's
        ("action_taken", at, r1, g1, c1, {"kind": "petition"}),
        ("action_taken", at, r1, g1, c1, {"kind": "petition"}),
        ("action_taken", at, r1, g1, c1, {"kind": "email"}),
        ("action_taken", at, r1, None, c1, {"kind": "petition"}),
        ("action_taken", at, r2, g3, c2, {"kind": "call"}),
        ("action_taken", at, None, g2, c3, {}),
        ("campaign_launched", at - timedelta(days=1), None, None, c1, {"title": "Campaign one", "goal": "g"}),
        ("campaign_launched", at, r1, g2, c3, {"title": "Campaign three", "goal": None}),
        ("campaign_launched", at, r2, None, c2, {"title": "Campaign two", "goal": "x"}),
        ("meeting_scheduled", at, r1, g1, m1, meeting("Meeting one", g1, 3)),
        ("meeting_scheduled", at, r2, g3, m2, meeting("Meeting two", g3, 5)),
        ("meeting_scheduled", at, r1, g2, m3, meeting("Meeting three", g2, 4)),
        ("meeting_cancelled", at + timedelta(hours=1), r1, g2, m3, {"reason": "rain"}),
        ("meeting_scheduled", at, None, g4, m4, meeting("Meeting four", g4, 2)),
        ("meeting_updated", at + timedelta(hours=1), None, g4, m4, meeting("Meeting four, moved", g4, 6)),
        ("rsvp_received", at - timedelta(days=3), r1, g1, m1, {"rsvp_id": id_of("v1"), "status": "going", "guests": 2}),
        ("rsvp_received", at, r1, g1, m1, {"rsvp_id": id_of("v2"), "status": "waitlisted", "guests": 0}),
        ("rsvp_received", at, r2, g3, m2, {"rsvp_id": id_of("v3"), "status": "going", "guests": 0}),
    ]
    for kind, occurred_at, region, group, subject, detail in rows:
        await db.execute(
            "INSERT INTO activity (event_id, kind, occurred_at, region_id, group_id, subject_id, detail) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
            str(uuid.uuid4()), kind, occurred_at, region, group, subject, json.dumps(detail),
        )  # fmt: skip

    digests = notifications_server.digests
    scopes = [Scope("network"), *(Scope("region", r) for r in (r1, r2, "no-such-region"))]
    scopes += [*(Scope("group", g) for g in (g1, g2, g3, g4, s1, "no-such-group")), Scope("subteam", s1)]
    async with digests.uows.begin() as uow:
        session = uow.session
        shared = DigestPass()
        for scope in scopes:
            reference_scope = Scope("group", g1) if scope.scope_type == "subteam" else scope
            expected = await _reference(session, digests, reference_scope, _WINDOW_START, _WINDOW_END)
            for digest_pass in (shared, None):
                content = await digests.compose(session, scope, _WINDOW_START, _WINDOW_END, digest_pass)
                assert _sections(content) == expected, scope

        # And what that is, spelled out for a few of them.
        group_one = _sections(await digests.compose(session, Scope("group", g1), _WINDOW_START, _WINDOW_END, shared))
        assert group_one["levels"] == [("supporter", 2)]  # its own join and the other region's member of both
        assert group_one["meetings"] == [(m1, 3, 1, 1)]
        # its region's other group: [g1, g2], its own, {g2: true} (not [5, [g2], g4]), an action, a meeting
        assert group_one["elsewhere"] == [("Group two", 3, 1, ["Meeting three"])]
        region_one = _sections(await digests.compose(session, Scope("region", r1), _WINDOW_START, _WINDOW_END, shared))
        assert region_one["levels"] == [("active", 2), ("", 1), ("supporter", 1)]
        network = _sections(await digests.compose(session, Scope("network"), _WINDOW_START, _WINDOW_END, shared))
        assert network["meetings"] == [(m1, 3, 1, 1), (m2, 1, 0, 1), (m4, 0, 0, 0)]
        assert [u[0] for u in network["elsewhere"]] == ["Region one", "Region two"]
