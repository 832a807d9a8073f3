"""Organisers' digests: scoped to their region or group, built on their schedule, emailed once and announced."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from services.notifications.digests import next_digest_time
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
