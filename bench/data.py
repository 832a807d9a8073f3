"""Data generators for the benchmarks: join forms, an event history for the reporting topics, the notifications
recipient mirror and an activity log with organisers for digests.

Seeding goes straight into a service's own tables (COPY) or onto its topics, the way the data would be after
the events had been handled, because going through the front door for a million members would take hours.
Each seeder returns what it created so the benchmark can remove it again.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.load import form_body

# Postcodes of the seeded Midlands districts (services/membership/seeds.py): each places the person in a region.
POSTCODES = ("B1 1AA", "B15 2TT", "CV1 2AB", "CV32 4AA", "NG1 5FS", "WV1 1LY", "LE1 7RH", "DE1 3AH", "WS1 1AA")
FIRST_NAMES = ("Ada", "Grace", "Kwame", "Priya", "Olu", "Mei", "Tomasz", "Aisha", "Rhys", "Noor", "Sam", "Lena")
LAST_NAMES = ("Lovelace", "Hopper", "Mensah", "Patel", "Adeyemi", "Chen", "Nowak", "Khan", "Evans", "Haddad")


def run_tag() -> str:
    return f"{time.strftime('%m%d%H%M%S')}-{uuid.uuid4().hex[:4]}"


def member_email(tag: str, i: int) -> str:
    return f"bench-{tag}-{i}@bench.example.org"


def join_fields(tag: str, i: int) -> dict[str, str]:
    rnd = random.Random(i)
    return {
        "name": f"{rnd.choice(FIRST_NAMES)} {rnd.choice(LAST_NAMES)}",
        "email": member_email(tag, i),
        "postcode": rnd.choice(POSTCODES),
        "email_consent": "yes",
    }


def benchmark_ip(i: int) -> str:
    """A caller address in 198.18.0.0/15 (RFC 2544, for benchmarks), one per join: every join is counted
    against the per-address limit as a real one would be, and none reaches it."""
    n = (i * 7919) % (1 << 17)
    return f"198.{18 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def join_request(tag: str):  # type: ignore[no-untyped-def]
    """A RequestFactory for bench.load: POST /join with the next person's form, from their own address."""

    def make(i: int) -> tuple[str, str, dict[str, str], bytes]:
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": benchmark_ip(i)}
        return "POST", "/join", headers, form_body(join_fields(tag, i))

    return make


# -- an event history for the reporting topics ----------------------------------------------------------------

def _sealed(owner: str, key_id: str) -> dict[str, str]:
    return {"key_owner": owner, "key_id": key_id, "nonce": "AAAAAAAAAAAAAAAA",
            "ciphertext": "c2VhbGVkLWluLWEtYmVuY2htYXJrLW5vdC1yZWFkYWJsZQ=="}


def _envelope(event_type: str, source: str, subject_id: str, data: dict[str, Any], at: datetime) -> bytes:
    return json.dumps({
        "event_id": str(uuid.uuid4()), "type": event_type, "version": 1, "occurred_at": at.isoformat(),
        "source": source, "correlation_id": "bench", "causation_id": None, "subject_id": subject_id, "data": data,
    }, separators=(",", ":")).encode()


def event_history(n: int, *, seed: int = 1, days: int = 730) -> Iterator[tuple[str, bytes, bytes]]:
    """`n` events of a network's life as (topic, key, value), in the order they happened over `days`: units,
    campaigns and asks first, then members joining, changing, leaving; meetings, RSVPs, attendance; actions;
    engagement levels. Only the reporting projection reads them, so sealed fields hold dummy ciphertext."""
    rnd = random.Random(seed)
    now = datetime.now(UTC)
    start = now - timedelta(days=days)
    step = timedelta(days=days) / max(n, 1)
    regions = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-region-{i}")) for i in range(6)]
    groups = [(str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-group-{i}")), regions[i % 6]) for i in range(60)]
    produced = 0
    for rid in regions:
        yield "membership.organisation", rid.encode(), _envelope(
            "OrganisationUnitDefined", "membership", rid,
            {"unit_id": rid, "kind": "region", "name": f"Region {rid[:4]}"}, start)
        produced += 1
    for gid, rid in groups:
        yield "membership.organisation", gid.encode(), _envelope(
            "OrganisationUnitDefined", "membership", gid,
            {"unit_id": gid, "kind": "group", "name": f"Group {gid[:4]}", "parent_id": rid}, start)
        produced += 1
    asks: list[tuple[str, str, str]] = []
    for c in range(20):
        cid = str(uuid.uuid4())
        yield "campaigns.campaigns", cid.encode(), _envelope(
            "CampaignLaunched", "campaigns", cid,
            {"campaign_id": cid, "title": f"Campaign {c}", "scope_type": "network", "partner_ids": []}, start)
        produced += 1
        for kind in ("petition", "pledge", "share"):
            aid = str(uuid.uuid4())
            asks.append((aid, cid, kind))
            yield "campaigns.campaigns", cid.encode(), _envelope(
                "AskPublished", "campaigns", cid,
                {"campaign_id": cid, "ask_id": aid, "kind": kind, "title": f"{kind} {c}"}, start)
            produced += 1
    members: list[tuple[str, str, str]] = []  # (member id, region, group)
    meetings: list[str] = []
    rsvps: list[tuple[str, str, str]] = []  # (rsvp id, meeting id, member id)
    levels = ("participant", "activist", "organiser")
    i = 0
    while produced < n:
        at = start + step * i
        i += 1
        roll = rnd.random()
        if roll < 0.40 or len(members) < 100:
            mid = str(uuid.uuid4())
            gid, rid = rnd.choice(groups)
            members.append((mid, rid, gid))
            yield "membership.members", mid.encode(), _envelope("MemberJoined", "membership", mid, {
                "member_id": mid, "email": _sealed("membership", mid), "name": _sealed("membership", mid),
                "region_id": rid, "group_ids": [gid], "suggested_group_id": gid, "engagement_level": "informed",
                "email_consent": True, "consent_wording_version": "email-2026-11", "source": "join-form",
                "confirmation_required": True, "joined_at": at.isoformat()}, at)
        elif roll < 0.44:
            mid, _, _ = rnd.choice(members)
            gid, rid = rnd.choice(groups)
            yield "membership.members", mid.encode(), _envelope("MemberProfileUpdated", "membership", mid, {
                "member_id": mid, "changed": ["region_id", "group_ids"], "region_id": rid, "group_ids": [gid]}, at)
        elif roll < 0.45:
            mid, _, _ = rnd.choice(members)
            yield "membership.members", mid.encode(), _envelope(
                "MemberLeft", "membership", mid, {"member_id": mid, "reason": "moved away"}, at)
        elif roll < 0.455 or not meetings:
            mtid = str(uuid.uuid4())
            gid, _ = rnd.choice(groups)
            meetings.append(mtid)
            yield "events.meetings", mtid.encode(), _envelope("MeetingScheduled", "events", mtid, {
                "meeting_id": mtid, "title": f"Meeting {len(meetings)}", "kind": "in_person", "scope_type": "group",
                "scope_id": gid, "starts_at": (at + timedelta(days=14)).isoformat(),
                "ends_at": (at + timedelta(days=14, hours=2)).isoformat(),
                "public_url": f"http://localhost/meetings/{mtid}"}, at)
        elif roll < 0.605:
            mtid = rnd.choice(meetings[-50:])
            mid, _, _ = rnd.choice(members)
            rid_ = str(uuid.uuid4())
            rsvps.append((rid_, mtid, mid))
            yield "events.rsvps", mtid.encode(), _envelope("RsvpReceived", "events", mtid, {
                "meeting_id": mtid, "rsvp_id": rid_, "member_id": mid, "status": "going"}, at)
        elif roll < 0.655 and rsvps:
            rid_, mtid, mid = rnd.choice(rsvps[-2000:])
            yield "events.rsvps", mtid.encode(), _envelope("AttendanceRecorded", "events", mtid, {
                "meeting_id": mtid, "rsvp_id": rid_, "member_id": mid, "method": "organiser",
                "attended_at": at.isoformat()}, at)
        elif roll < 0.925:
            aid, cid, kind = rnd.choice(asks)
            mid, rid, gid = rnd.choice(members)
            act = str(uuid.uuid4())
            yield "campaigns.actions", aid.encode(), _envelope("ActionTaken", "campaigns", aid, {
                "action_id": act, "ask_id": aid, "campaign_id": cid, "kind": kind, "member_id": mid,
                "region_id": rid, "group_id": gid, "taken_at": at.isoformat()}, at)
        else:
            mid, _, _ = rnd.choice(members)
            yield "campaigns.engagement", mid.encode(), _envelope("EngagementLevelChanged", "campaigns", mid, {
                "member_id": mid, "level": rnd.choice(levels), "reason": "actions"}, at)
        produced += 1


async def produce(bootstrap: str, records: Iterator[tuple[str, bytes, bytes]]) -> int:
    """Send records as fast as one aiokafka producer goes (batched, acks=all as the relay sends)."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50,
                                max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future] = []
        for topic, key, value in records:
            pending.append(await producer.send(topic, value=value, key=key))
            sent += 1
            if len(pending) >= 20000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


# -- the notifications recipient mirror -----------------------------------------------------------------------

async def seed_recipients(conn: Any, n: int, group_id: str, tag: str) -> list[str]:
    """`n` confirmed, consenting members of one local group in notifications' mirror (as
    tests/notifications/test_announcements.py seeds them); returns their email addresses."""
    now = datetime.now(UTC)
    rows = [(str(uuid.uuid4()), member_email(tag, i), f"{FIRST_NAMES[i % len(FIRST_NAMES)]} Member", True,
             "confirmed", [group_id], now) for i in range(n)]
    await conn.copy_records_to_table(
        "recipients", records=rows,
        columns=["member_id", "email", "name", "email_consent", "status", "group_ids", "updated_at"])
    return [r[1] for r in rows]


# -- organisers and the activity log, for digests -------------------------------------------------------------

async def seed_digest_world(conn: Any, *, organisers: int, members: int, seed: int = 2, days: int = 730
                            ) -> dict[str, Any]:
    """A network in notifications' tables: regions and groups, `organisers` organisers each subscribed to a
    digest of their group, region or the network, and an activity log of `members` joins over `days` (with
    actions, meetings and RSVPs in proportion, the last week the busiest as in a growing network).
    Returns the ids to remove afterwards."""
    rnd = random.Random(seed)
    now = datetime.now(UTC)
    n_regions = max(2, organisers // 80)
    regions = [str(uuid.uuid4()) for _ in range(n_regions)]
    groups = [(str(uuid.uuid4()), regions[i % n_regions]) for i in range(max(4, organisers * 9 // 10))]
    units: list[tuple[str, str, str, str | None, datetime]] = [
        (rid, "region", f"Bench region {i}", None, now) for i, rid in enumerate(regions)]
    units += [(gid, "group", f"Bench group {i}", rid, now) for i, (gid, rid) in enumerate(groups)]
    await conn.copy_records_to_table("units", records=units,
                                     columns=["unit_id", "kind", "name", "parent_id", "updated_at"])
    org_rows, sub_rows = [], []
    for i in range(organisers):
        oid = str(uuid.uuid4())
        org_rows.append((oid, f"organiser-{i}-{oid[:8]}@bench.example.org", f"Organiser {i}", "weekly",
                         uuid.uuid4().hex + uuid.uuid4().hex[:16], now, now, now))
        if i < max(1, organisers // 100):
            scope = ("network", "")
        elif i < organisers // 10:
            scope = ("region", regions[i % n_regions])
        else:
            scope = ("group", groups[i % len(groups)][0])
        sub_rows.append((oid, "organiser", scope[0], scope[1], now + timedelta(days=7), now))
    await conn.copy_records_to_table(
        "organisers", records=org_rows,
        columns=["organiser_id", "email", "name", "digest_period", "feed_token", "feed_token_created_at",
                 "created_at", "updated_at"])
    await conn.copy_records_to_table(
        "digest_subscriptions", records=sub_rows,
        columns=["organiser_id", "role", "scope_type", "scope_id", "next_digest_at", "created_at"])
    first_activity = await conn.fetchval("SELECT coalesce(max(id), 0) FROM activity")

    def when() -> datetime:
        # Joins grow over time: the density rises linearly, so the last week holds about 2% of them.
        return now - timedelta(days=days) * (1 - rnd.random() ** 0.5)

    batch: list[tuple[Any, ...]] = []
    meetings: list[tuple[str, str, str]] = []
    campaigns = [str(uuid.uuid4()) for _ in range(20)]

    async def flush() -> None:
        await conn.copy_records_to_table(
            "activity", records=batch,
            columns=["event_id", "kind", "occurred_at", "region_id", "group_id", "subject_id", "detail"])
        batch.clear()

    for cid in campaigns:
        batch.append((str(uuid.uuid4()), "campaign_launched", when(), None, None, cid,
                      json.dumps({"title": f"Campaign {cid[:4]}", "goal": "", "scope_type": "network", "bench": True})))
    for _ in range(max(10, members // 200)):
        gid, rid = rnd.choice(groups)
        mid = str(uuid.uuid4())
        at = when()
        starts = at + timedelta(days=rnd.randint(1, 40))
        meetings.append((mid, rid, gid))
        batch.append((str(uuid.uuid4()), "meeting_scheduled", at, rid, gid, mid, json.dumps({
            "title": f"Meeting {mid[:4]}", "kind": "in_person", "scope_type": "group", "scope_id": gid,
            "starts_at": starts.isoformat(), "ends_at": (starts + timedelta(hours=2)).isoformat(),
            "timezone": "Europe/London", "venue": "Hall", "capacity": 40,
            "public_url": f"http://localhost/meetings/{mid}", "campaign_id": None, "parent_meeting_id": None,
            "bench": True})))
    for i in range(members):
        gid, rid = rnd.choice(groups)
        batch.append((str(uuid.uuid4()), "member_joined", when(), rid, gid, str(uuid.uuid4()), json.dumps(
            {"engagement_level": "informed", "group_ids": [gid], "source": "join-form", "bench": True})))
        if i % 5 == 0:
            batch.append((str(uuid.uuid4()), "action_taken", when(), rid, gid, rnd.choice(campaigns), json.dumps(
                {"ask_id": str(uuid.uuid4()), "kind": "petition", "action_id": str(uuid.uuid4()), "bench": True})))
        if i % 20 == 0:
            mid, mrid, mgid = rnd.choice(meetings)
            batch.append((str(uuid.uuid4()), "rsvp_received", when(), mrid, mgid, mid, json.dumps(
                {"rsvp_id": str(uuid.uuid4()), "status": "going", "guests": 0, "bench": True})))
        if len(batch) >= 50000:
            await flush()
    if batch:
        await flush()
    return {"organisers": [r[0] for r in org_rows], "units": [u[0] for u in units], "first_activity": first_activity}


async def remove_digest_world(conn: Any, world: dict[str, Any]) -> None:
    ids = world["organisers"]
    await conn.execute("DELETE FROM activity WHERE id > $1 AND detail ? 'bench'", world["first_activity"])
    await conn.execute("DELETE FROM digests WHERE organiser_id = ANY($1)", ids)
    await conn.execute("DELETE FROM digest_subscriptions WHERE organiser_id = ANY($1)", ids)
    await conn.execute("DELETE FROM organisers WHERE organiser_id = ANY($1)", ids)
    await conn.execute("DELETE FROM units WHERE unit_id = ANY($1)", world["units"])
