"""A national network for the organiser pages' benchmark (bench/pages.py, issue 20): `members` members over five
years in 12 regions and 300 local groups, with about 10 actions, 0.2 meetings (with RSVPs and attendance) and
20 deliveries per member, skewed as a real network is (a few big groups, most members never act, a few act a
lot, the last years busier than the first).

How it gets into the services (so their read models are the ones the services build themselves):

- Each service's own records are written into its own tables with COPY, from rows made by the service's own
  code where there is one (membership's `new_member_row`, `joined_events`, `address_hash`), and the facts are
  published to the service's topics with the project's own envelope and sealing (`Envelope.wrap`,
  `shared.crypto.seal` through `joined_events`): membership (regions, groups, members, their groups, consent,
  keys: `OrganisationUnitDefined`, `SubjectKeyIssued`, `MemberJoined`, `MemberConfirmed`, `MemberLeft`),
  campaigns (campaigns, asks, actions: `CampaignLaunched`, `AskPublished`, `ActionTaken`), events (meetings,
  RSVPs, attendance: `MeetingScheduled`, `RsvpReceived`, `AttendanceRecorded`).
- The running consumers then build every mirror and read model from those topics as they would have over
  five years: events' and campaigns' members and units, campaigns' reporting and engagement, membership's
  reactions and ladder, notifications' activity log, keys and organisers' units.
- One exception: notifications' `notifications` group (welcome emails, RSVP and action confirmations) would
  send a million emails now for things done years ago. It is stopped while the history is produced and moved
  to the end of it (as if it had handled it then), and what it would have left behind is written directly:
  the recipients mirror (the same columns its MemberJoined handler writes) and the delivery log, 20 per member
  (welcomes, confirmations of petitions, pledges and RSVPs, meeting announcements), all sent.

Run once per stack (it refuses to run twice: `network.json` in the state directory's bench/ folder records
what it made); `bench/pages.py` reads that file. Sizes: `--quick` is 20,000 members; the full size 1,000,000.

`--own-records-only` writes each service's own records (and the delivery log) without the history on the topics;
`--membership-only` (implying it) writes membership's alone: the regions, groups and members (their groups, consent
and keys), nothing of campaigns, events or notifications, for the member list's pages at a size made in minutes.

    .venv/bin/python bench/network.py --members 20000
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from bench.common import asyncpg_dsn, launcher, say  # noqa: E402
from bench.data import POSTCODES  # noqa: E402  (the seeded districts: each places a person in a region)
from services.membership.domain import joined_events, new_member_row  # noqa: E402
from shared.contact import address_hash  # noqa: E402
from shared.crypto import new_key  # noqa: E402
from shared.events.catalog import (  # noqa: E402
    ActionTaken,
    AskPublished,
    AttendanceRecorded,
    CampaignLaunched,
    MeetingScheduled,
    MemberConfirmed,
    MemberLeft,
    NotificationSent,
    OrganisationUnitDefined,
    RsvpReceived,
)
from shared.events.envelope import Envelope, EventData  # noqa: E402

FULL_MEMBERS = 1_000_000
QUICK_MEMBERS = 20_000
REGIONS = 12
GROUPS = 300
YEARS = 5
ACTIONS_PER_MEMBER = 10
MEETINGS_PER_MEMBER = 0.2
DELIVERIES_PER_MEMBER = 20
ACTIVE_SHARE = 0.3  # members who ever act; the rest only joined
CHUNK = 20_000

FIRST = ("Ada", "Grace", "Kwame", "Priya", "Olu", "Mei", "Tomasz", "Aisha", "Rhys", "Noor", "Sam", "Lena", "Yusuf",
         "Chidi", "Fatima", "Marek", "Sian", "Ravi", "Amara", "Jonah", "Zainab", "Ewan", "Leila", "Kofi", "Hana",
         "Dev", "Maya", "Idris", "Niamh", "Tariq", "Rosa", "Femi", "Anya", "Bilal", "Cerys", "Dami", "Esi", "Gus")
LAST = ("Lovelace", "Hopper", "Mensah", "Patel", "Adeyemi", "Chen", "Nowak", "Khan", "Evans", "Haddad", "Okafor",
        "Singh", "Jones", "Ahmed", "Williams", "Kowalski", "Osei", "Begum", "Brown", "Hussain", "Taylor", "Ali",
        "Davies", "Campbell", "Murphy", "Nguyen", "Rahman", "Thomas", "Boateng", "Clarke", "Hughes", "Igwe",
        "Kaur", "Lewis", "Mahmood", "Obi", "Price", "Reid", "Shah", "Walker", "Yildiz", "Zulu")
LEVELS = ("informed", "take_action", "organise")
INTERESTS = ("racism-in-healthcare", "racism-at-work", "racism-in-policing", "hostile-environment",
             "racism-in-education")
ASK_KINDS = ("petition", "pledge", "share")


def manifest_path() -> Path:
    return launcher.STATE_DIR / "bench" / "network.json"


def read_manifest() -> dict[str, Any] | None:
    path = manifest_path()
    return json.loads(path.read_text()) if path.exists() else None


@dataclass
class Member:
    id: str
    group: int
    joined_at: datetime
    status: str  # confirmed | pending | left
    name: str
    email: str


def _wrap(event: EventData, at: datetime) -> tuple[str, bytes, bytes]:
    envelope = Envelope.wrap(event, correlation_id="bench-network", occurred_at=at)
    return event.topic, event.subject().encode(), envelope.to_bytes()


class Publisher:
    """One batched producer (acks=all, as the outbox relay sends) for the whole history."""

    enabled = True

    def __init__(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, acks="all", linger_ms=50,
                                         max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
        self.sent = 0
        self._pending: list[asyncio.Future[Any]] = []

    async def __aenter__(self) -> Publisher:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.flush()
        finally:
            await self.producer.stop()

    async def send(self, records: Iterator[tuple[str, bytes, bytes]]) -> None:
        for topic, key, value in records:
            self._pending.append(await self.producer.send(topic, value=value, key=key))
            self.sent += 1
            if len(self._pending) >= 20_000:
                await self.flush()

    async def flush(self) -> None:
        await asyncio.gather(*self._pending)
        self._pending.clear()


class Discard(Publisher):
    """A publisher for `--own-records-only`: the history's events are not made at all (nothing would consume them)."""

    enabled = False

    def __init__(self) -> None:
        self.sent = 0

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def send(self, records: Iterator[tuple[str, bytes, bytes]]) -> None:
        return None

    async def flush(self) -> None:
        return None


class Network:
    """The generated network: its structure and people, built deterministically from `seed`."""

    def __init__(self, members: int, seed: int = 20) -> None:
        self.n = members
        self.rnd = random.Random(seed)
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.start = self.now - timedelta(days=365 * YEARS)
        ns = uuid.uuid5(uuid.NAMESPACE_URL, f"groundswell-bench-network-{seed}")
        self.regions = [str(uuid.uuid5(ns, f"region-{i}")) for i in range(REGIONS)]
        self.groups = [str(uuid.uuid5(ns, f"group-{i}")) for i in range(GROUPS)]
        self.group_region = [i % REGIONS for i in range(GROUPS)]
        # Group sizes follow Zipf's law (s = 0.9): the biggest holds about a tenth of the network, most are small.
        self.group_weights = [1 / (rank + 1) ** 0.9 for rank in range(GROUPS)]
        self.members: list[Member] = []
        self.by_group: list[list[int]] = [[] for _ in range(GROUPS)]

    def when(self) -> datetime:
        """A moment in the five years, the later ones likelier (the network grew)."""
        return self.now - (self.now - self.start) * (1 - self.rnd.random() ** 0.5)

    def make_members(self) -> None:
        rnd = self.rnd
        groups = rnd.choices(range(GROUPS), weights=self.group_weights, k=self.n)
        for i in range(self.n):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            joined = self.when()
            roll = rnd.random()
            status = "left" if roll < 0.08 else ("pending" if roll < 0.11 else "confirmed")
            m = Member(str(uuid.UUID(int=rnd.getrandbits(128), version=4)), groups[i], joined, status,
                       f"{first} {last}", f"{first}.{last}.{i}@members.example.net".lower())
            self.members.append(m)
            self.by_group[m.group].append(i)
        self.members.sort(key=lambda m: m.joined_at)
        self.by_group = [[] for _ in range(GROUPS)]
        for i, m in enumerate(self.members):
            self.by_group[m.group].append(i)


async def copy(conn: asyncpg.Connection, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        await conn.copy_records_to_table(table, records=rows, columns=columns)


async def units(net: Network, dbs: dict[str, asyncpg.Connection], pub: Publisher) -> None:
    m = dbs["membership"]
    await copy(m, "regions", ["id", "slug", "name"],
               [(rid, f"bench-region-{i}", f"Bench Region {i + 1}") for i, rid in enumerate(net.regions)])
    await copy(m, "local_groups", ["id", "slug", "name", "region_id"],
               [(gid, f"bench-group-{i}", f"Bench Group {i + 1}", net.regions[net.group_region[i]])
                for i, gid in enumerate(net.groups)])
    events = [OrganisationUnitDefined(unit_id=rid, kind="region", name=f"Bench Region {i + 1}",
                                      slug=f"bench-region-{i}") for i, rid in enumerate(net.regions)]
    events += [OrganisationUnitDefined(unit_id=gid, kind="group", name=f"Bench Group {i + 1}",
                                       parent_id=net.regions[net.group_region[i]], slug=f"bench-group-{i}")
               for i, gid in enumerate(net.groups)]
    await pub.send(_wrap(e, net.start) for e in events)


async def members(net: Network, dbs: dict[str, asyncpg.Connection], pub: Publisher, *, mirror: bool = True) -> None:
    """Members through membership's own row and event code; notifications' mirror beside them (unless not
    `mirror`)."""
    secret = launcher.secret_key()
    m_db, n_db = dbs["membership"], dbs["notifications"]
    rnd = net.rnd
    member_cols = ["id", "email_normalised", "name", "postcode", "region_id", "suggested_group_id",
                   "engagement_level", "interests", "skills", "time_available", "organisation_id",
                   "organisation_name", "status", "confirmed_at", "email_consent", "source", "joined_at",
                   "updated_at", "left_at"]
    recipient_cols = ["member_id", "email", "name", "email_consent", "status", "region_id", "engagement_level",
                      "group_ids", "interests", "joined_at", "updated_at"]
    for lo in range(0, net.n, CHUNK):
        rows, groups, consents, keys, recipients, records = [], [], [], [], [], []
        for m in net.members[lo:lo + CHUNK]:
            gid = net.groups[m.group]
            rid = net.regions[net.group_region[m.group]]
            profile = SimpleNamespace(
                email_normalised=m.email, name=m.name, postcode=rnd.choice(POSTCODES), region_id=rid,
                suggested_group_id=gid, engagement_level=rnd.choices(LEVELS, weights=(70, 22, 8))[0],
                interests=rnd.sample(INTERESTS, rnd.choice((0, 0, 1, 1, 2))), skills=None, time_available=None,
                organisation_id=None, organisation_name=None, email_consent=rnd.random() < 0.85, source="join-form",
            )
            row = new_member_row(m.id, profile, m.joined_at, double_opt_in=True)  # type: ignore[arg-type]
            confirmed_at = None if m.status == "pending" else m.joined_at + timedelta(minutes=rnd.randint(2, 600))
            left_at = m.joined_at + (net.now - m.joined_at) * rnd.random() if m.status == "left" else None
            row.update(status=m.status, confirmed_at=confirmed_at, left_at=left_at,
                       updated_at=left_at or confirmed_at or m.joined_at)
            rows.append(tuple(row[c] if c != "left_at" else left_at for c in member_cols))
            groups.append((m.id, gid, m.joined_at))
            consents.append((str(uuid.uuid4()), m.id, "email", profile.email_consent, "email-2026-11", "join-form",
                             m.joined_at))
            key = new_key()
            keys.append((m.id, key, m.joined_at))
            recipients.append((m.id, m.email, m.name, profile.email_consent,
                               "left" if m.status == "left" else ("pending" if m.status == "pending" else "confirmed"),
                               rid, profile.engagement_level, [gid], profile.interests, m.joined_at, m.joined_at))
            if not pub.enabled:
                continue
            for e in joined_events(m.id, key, profile, [gid], [], consent_version="email-2026-11",
                                   source="join-form", confirm=True, now=m.joined_at,
                                   email_hash=address_hash(secret, m.email)):
                records.append(_wrap(e, m.joined_at))
            if confirmed_at is not None:
                records.append(_wrap(MemberConfirmed(member_id=m.id, confirmed_at=confirmed_at), confirmed_at))
            if left_at is not None:
                records.append(_wrap(MemberLeft(member_id=m.id), left_at))
        await copy(m_db, "members", member_cols, rows)
        await copy(m_db, "member_groups", ["member_id", "group_id", "joined_at"], groups)
        await copy(m_db, "consent_records", ["id", "member_id", "channel", "granted", "wording_version", "source",
                                             "recorded_at"], consents)
        await copy(m_db, "subject_keys", ["key_id", "key", "created_at"], keys)
        if mirror:
            await copy(n_db, "recipients", recipient_cols, recipients)
        await pub.send(iter(records))
        say(f"network: {min(lo + CHUNK, net.n):,} of {net.n:,} members")


def _pareto_counts(rnd: random.Random, people: int, total: int, cap: int) -> list[int]:
    """How many things each of `people` does, `total` in all, heavy-tailed (a few do a lot), at most `cap` each."""
    weights = [rnd.paretovariate(1.3) for _ in range(people)]
    scale = total / sum(weights)
    counts = [min(cap, max(1, round(w * scale))) for w in weights]
    short = total - sum(counts)
    while short > 0:
        room = [i for i, c in enumerate(counts) if c < cap]
        if not room:
            break
        for i in rnd.sample(room, min(len(room), short)):
            counts[i] += 1
        short = total - sum(counts)
    return counts


async def campaigns(net: Network, dbs: dict[str, asyncpg.Connection], pub: Publisher) -> dict[str, int]:
    """Campaigns and asks over five years, and 10 actions per member taken by a third of them."""
    rnd, c_db = net.rnd, dbs["campaigns"]
    n_campaigns = max(60, net.n // 5000)
    camp_rows, ask_rows, records = [], [], []
    asks: list[tuple[str, str, str, datetime]] = []
    for c in range(n_campaigns):
        cid = str(uuid.uuid4())
        launched = net.when()
        camp_rows.append((cid, f"Campaign {c + 1}", "network", "live", launched))
        records.append(_wrap(CampaignLaunched(campaign_id=cid, title=f"Campaign {c + 1}", scope_type="network"),
                             launched))
        for pos, kind in enumerate(ASK_KINDS):
            aid = str(uuid.uuid4())
            asks.append((aid, cid, kind, launched))
            ask_rows.append((aid, cid, kind, f"{kind.title()} {c + 1}", pos, launched))
            records.append(_wrap(AskPublished(campaign_id=cid, ask_id=aid, kind=kind, title=f"{kind.title()} {c + 1}"),
                                 launched))
    await copy(c_db, "campaigns", ["id", "title", "scope_type", "status", "launched_at"], camp_rows)
    await copy(c_db, "asks", ["id", "campaign_id", "kind", "title", "position", "created_at"], ask_rows)
    await pub.send(iter(records))
    active = rnd.sample(range(net.n), int(net.n * ACTIVE_SHARE))
    counts = _pareto_counts(rnd, len(active), net.n * ACTIONS_PER_MEMBER, len(asks))
    cols = ["id", "ask_id", "campaign_id", "kind", "person_ref", "member_id", "name", "email", "moderation",
            "channel", "source", "region_id", "group_id", "created_at"]
    rows, records, made, confirmations = [], [], 0, 0
    for idx, count in zip(active, counts, strict=True):
        m = net.members[idx]
        gid, rid = net.groups[m.group], net.regions[net.group_region[m.group]]
        for aid, cid, kind, launched in rnd.sample(asks, count):
            act = str(uuid.uuid4())
            since = max(launched, m.joined_at)
            at = since + (net.now - since) * rnd.random()
            rows.append((act, aid, cid, kind, f"member:{m.id}", m.id, m.name, m.email,
                         "approved" if kind == "pledge" else None, "email" if kind == "share" else None, "form",
                         rid, gid, at))
            if pub.enabled:
                records.append(_wrap(ActionTaken(action_id=act, ask_id=aid, campaign_id=cid, kind=kind,
                                                 member_id=m.id, region_id=rid, group_id=gid, taken_at=at), at))
            confirmations += kind != "share"
        if len(rows) >= CHUNK:
            await copy(c_db, "actions", cols, rows)
            await pub.send(iter(records))
            made += len(rows)
            rows, records = [], []
            if made % (CHUNK * 10) < CHUNK:
                say(f"network: {made:,} actions")
    await copy(c_db, "actions", cols, rows)
    await pub.send(iter(records))
    made += len(rows)
    return {"campaigns": n_campaigns, "asks": len(asks), "actions": made, "active_members": len(active),
            "confirmations": confirmations}


async def meetings(net: Network, dbs: dict[str, asyncpg.Connection], pub: Publisher) -> dict[str, Any]:
    """Meetings of groups (most), regions and the network over five years, a few still to come, with RSVPs from
    the scope's members and attendance recorded at most past ones."""
    rnd, e_db = net.rnd, dbs["events"]
    n_meetings = max(50, int(net.n * MEETINGS_PER_MEMBER))
    meeting_cols = ["id", "title", "kind", "scope_type", "scope_id", "region_id", "starts_at", "ends_at", "venue",
                    "going_count", "check_in_code", "created_at", "updated_at"]
    rsvp_cols = ["id", "meeting_id", "member_id", "person_ref", "name", "email", "status", "source", "created_at",
                 "updated_at", "attended_at", "attendance_method"]
    made_rsvps = attended = 0
    joined = [m.joined_at for m in net.members]
    meeting_rows, rsvp_rows, records = [], [], []
    group_meetings: list[tuple[str, int]] = []
    for k in range(n_meetings):
        mtid = str(uuid.uuid4())
        roll = rnd.random()
        if roll < 0.90:
            g = rnd.choices(range(GROUPS), weights=net.group_weights)[0]
            scope, scope_id, region, pool = "group", net.groups[g], net.regions[net.group_region[g]], net.by_group[g]
            group_meetings.append((mtid, g))
        elif roll < 0.98:
            r = rnd.randrange(REGIONS)
            scope, scope_id, region = "region", net.regions[r], net.regions[r]
            pool = sorted(i for g in range(r, GROUPS, REGIONS) for i in net.by_group[g][-2000:])
        else:
            scope, scope_id, region, pool = "network", None, None, list(range(net.n))
        upcoming = rnd.random() < 0.03
        created = net.when() if not upcoming else net.now - timedelta(days=rnd.randint(1, 20))
        starts = created + timedelta(days=rnd.randint(7, 40)) if not upcoming else net.now + timedelta(
            days=rnd.randint(1, 60), hours=rnd.randint(0, 23))
        ends = starts + timedelta(hours=2)
        # Members who had joined by then; RSVPs: about 10 a meeting, more for bigger scopes.
        # Members are in the order they joined, and so is every pool: those who had joined are a prefix.
        eligible = pool[:bisect.bisect_left(pool, bisect.bisect_left(joined, created))] or pool[:1]
        want = min(len(eligible), max(1, int(rnd.expovariate(1 / 10) * (1 + math.log10(max(len(pool), 1)) / 3))))
        chosen = rnd.sample(eligible, want) if eligible else []
        meeting_rows.append((mtid, f"Meeting {k + 1}", "in_person", scope, scope_id, region, starts, ends,
                             "Community hall", len(chosen), f"{rnd.randrange(16 ** 6):06x}", created, created))
        records.append(_wrap(MeetingScheduled(
            meeting_id=mtid, title=f"Meeting {k + 1}", kind="in_person", scope_type=scope, scope_id=scope_id,
            starts_at=starts, ends_at=ends, venue="Community hall",
            public_url=f"{launcher.GATEWAY_URL}/events/{mtid}"), created))
        for i in chosen:
            m = net.members[i]
            rsvp_id = str(uuid.uuid4())
            at = created + (starts - created) * rnd.random()
            came = starts < net.now and rnd.random() < 0.55
            rsvp_rows.append((rsvp_id, mtid, m.id, f"member:{m.id}", m.name, m.email, "going", "form", at, at,
                              starts if came else None, "organiser" if came else None))
            if pub.enabled:
                records.append(_wrap(RsvpReceived(meeting_id=mtid, rsvp_id=rsvp_id, member_id=m.id, status="going"),
                                     at))
            if came and pub.enabled:
                records.append(_wrap(AttendanceRecorded(meeting_id=mtid, rsvp_id=rsvp_id, member_id=m.id,
                                                        method="organiser", attended_at=starts), starts))
            if came:
                attended += 1
        made_rsvps += len(chosen)
        if len(rsvp_rows) >= CHUNK or k == n_meetings - 1:
            await copy(e_db, "meetings", meeting_cols, meeting_rows)
            await copy(e_db, "rsvps", rsvp_cols, rsvp_rows)
            await pub.send(iter(records))
            meeting_rows, rsvp_rows, records = [], [], []
    return {"meetings": n_meetings, "rsvps": made_rsvps, "attended": attended, "group_meetings": group_meetings}


async def deliveries(net: Network, dbs: dict[str, asyncpg.Connection], facts: dict[str, Any]) -> int:
    """The delivery log notifications would have written: a welcome for each member, a confirmation of each
    petition, pledge and RSVP, and meeting announcements to group members, 20 per member in all, all sent."""
    rnd, n_db = net.rnd, dbs["notifications"]
    target = net.n * DELIVERIES_PER_MEMBER
    cols = ["id", "kind", "subject_ref", "recipient_id", "recipient_email", "subject", "body_text", "status",
            "priority", "attempts", "next_attempt_at", "created_at", "sent_at"]
    made = 0
    rows: list[tuple[Any, ...]] = []

    async def add(kind: str, ref: str, m: Member, subject: str, at: datetime, priority: int = 0) -> None:
        nonlocal made, rows
        rows.append((str(uuid.uuid4()), kind, ref, m.id, m.email, subject, f"{subject}\n\n(bench)", "sent", priority,
                     1, at, at, at + timedelta(seconds=rnd.randint(1, 90))))
        made += 1
        if len(rows) >= CHUNK * 5:
            await copy(n_db, "deliveries", cols, rows)
            rows = []

    for m in net.members:
        await add("welcome", m.id, m, "Welcome to the network", m.joined_at)
    # Confirmations and announcements stand for the rest: the log's size and shape is what the pages feel.
    confirmations = min(facts["confirmations"] + facts["rsvps"], target - made)
    for _ in range(confirmations):
        m = net.members[rnd.randrange(net.n)]
        await add(rnd.choice(("petition_signed", "pledge_received", "rsvp_confirmation")), str(uuid.uuid4()), m,
                  "Thank you", m.joined_at + (net.now - m.joined_at) * rnd.random())
    group_meetings = list(facts["group_meetings"])
    rnd.shuffle(group_meetings)  # each meeting announced once (one delivery per kind, subject and recipient)
    for mtid, g in group_meetings:
        if made >= target:
            break
        members = net.by_group[g]
        for i in rnd.sample(members, min(len(members), target - made, 2000)):
            m = net.members[i]
            await add("announcement", mtid, m, "A meeting near you", m.joined_at, priority=1)
    if rows:
        await copy(n_db, "deliveries", cols, rows)
    return made


DELIVERIES_IN_SQL = """
INSERT INTO deliveries (id, kind, subject_ref, recipient_id, recipient_email, subject, body_text, status, priority,
                        attempts, next_attempt_at, created_at, sent_at)
SELECT gen_random_uuid()::text, k.kind, CASE WHEN k.kind = 'welcome' THEN r.member_id ELSE gen_random_uuid()::text END,
       r.member_id, r.email, k.subject, k.subject || E'\n\n(bench)', 'sent', k.priority, 1, t.at, t.at,
       t.at + interval '30 seconds'
FROM recipients r
CROSS JOIN generate_series(1, $2::int) AS i
CROSS JOIN LATERAL (SELECT CASE WHEN i = 1 THEN 'welcome'
                                WHEN i <= 6
                                THEN (ARRAY['petition_signed', 'pledge_received', 'rsvp_confirmation'])[1 + i % 3]
                                ELSE 'announcement' END AS kind,
                           CASE WHEN i = 1 THEN 'Welcome to the network' WHEN i <= 6 THEN 'Thank you'
                                ELSE 'A meeting near you' END AS subject,
                           CASE WHEN i > 6 THEN 1 ELSE 0 END AS priority) k
CROSS JOIN LATERAL (SELECT CASE WHEN i = 1 THEN r.joined_at
                                ELSE r.joined_at + (now() - r.joined_at) * random() END AS at) t
WHERE r.joined_at IS NOT NULL AND abs(hashtext(r.member_id)) % $3::int = $1::int
"""


async def deliveries_in_sql(net: Network, dbs: dict[str, asyncpg.Connection]) -> int:
    """The delivery log of `--own-records-only`, made by the database from the recipients (Python's 20 rows a
    member would take most of an hour at a million): a welcome, 5 confirmations and 14 meeting announcements a
    member, each after they joined, all sent."""
    made, parts = 0, max(1, net.n // 50_000)
    for part in range(parts):
        status = await dbs["notifications"].execute(DELIVERIES_IN_SQL, part, DELIVERIES_PER_MEMBER, parts)
        made += int(status.split()[-1])
        say(f"network: {made:,} deliveries")
    return made


async def publish_deliveries(n_db: asyncpg.Connection, pub: Publisher) -> int:
    """`NotificationSent` for every delivery of the log, as notifications' sender announces each email it sent
    (membership's member timeline is built from them)."""
    made = 0
    async with n_db.transaction():
        cursor = n_db.cursor("SELECT id, kind, recipient_id, sent_at FROM deliveries WHERE status = 'sent' "
                             "ORDER BY sent_at", prefetch=CHUNK)
        batch: list[tuple[str, bytes, bytes]] = []
        async for r in cursor:
            batch.append(_wrap(NotificationSent(delivery_id=r["id"], kind=r["kind"], recipient_id=r["recipient_id"],
                                                sent_at=r["sent_at"]), r["sent_at"]))
            if len(batch) >= CHUNK:
                await pub.send(iter(batch))
                made += len(batch)
                batch = []
                if made % (CHUNK * 20) == 0:
                    say(f"network: {made:,} deliveries announced")
        await pub.send(iter(batch))
        made += len(batch)
    return made


async def skip_group_to_end(group: str, topic_names: tuple[str, ...]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(t, p) for t in topic_names for p in sorted(cluster.partitions_for_topic(t) or set())]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.commit(dict(ends.items()))
    finally:
        await consumer.stop()


async def consumer_lag(groups: list[str]) -> int:
    """Records not yet consumed by these groups, over every domain topic they have committed offsets on."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=launcher.KAFKA_BOOTSTRAP)
    consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        lag = 0
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            tps = [tp for tp in offsets if not tp.topic.startswith("__")]
            if not tps:
                continue
            ends = await consumer.end_offsets(tps)
            lag += sum(max(0, ends[tp] - offsets[tp].offset) for tp in tps if offsets[tp].offset >= 0)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def from_databases(dbs: dict[str, asyncpg.Connection], seed: int = 20) -> tuple[Network, dict[str, Any]]:
    """The network a generation that stopped after producing its history left in the databases (its members,
    groups and meetings), to finish it with `--resume`."""
    rows = await dbs["membership"].fetch(
        "SELECT m.id, m.name, m.email_normalised, m.joined_at, m.status, g.group_id FROM members m "
        "JOIN member_groups g ON g.member_id = m.id JOIN local_groups l ON l.id = g.group_id "
        "WHERE l.slug LIKE 'bench-group-%' ORDER BY m.joined_at")
    net = Network(len(rows), seed)
    index = {gid: i for i, gid in enumerate(net.groups)}
    net.members = [Member(r["id"], index[r["group_id"]], r["joined_at"], r["status"], r["name"],
                          r["email_normalised"]) for r in rows]
    for i, m in enumerate(net.members):
        net.by_group[m.group].append(i)
    e, c = dbs["events"], dbs["campaigns"]
    facts: dict[str, Any] = {
        "group_meetings": [(r["id"], index[r["scope_id"]]) for r in await e.fetch(
            "SELECT id, scope_id FROM meetings WHERE scope_type = 'group' AND scope_id = ANY($1)", net.groups)],
        "meetings": await e.fetchval("SELECT count(*) FROM meetings"),
        "rsvps": await e.fetchval("SELECT count(*) FROM rsvps"),
        "attended": await e.fetchval("SELECT count(*) FROM rsvps WHERE attended_at IS NOT NULL"),
        "campaigns": await c.fetchval("SELECT count(*) FROM campaigns"),
        "asks": await c.fetchval("SELECT count(*) FROM asks"),
        "actions": await c.fetchval("SELECT count(*) FROM actions"),
        "active_members": await c.fetchval("SELECT count(DISTINCT member_id) FROM actions"),
        "confirmations": await c.fetchval("SELECT count(*) FROM actions WHERE kind <> 'share'"),
    }
    return net, facts


async def generate(n: int, seed: int = 20, *, resume: bool = False, own_records_only: bool = False,
                   membership_only: bool = False) -> dict[str, Any]:
    """Make the network (see the module's docstring). `own_records_only`: each service's own records and the
    delivery log only, no history on the topics, so no mirror or read model is built from it (the regions and
    groups are still announced): the pages that read a service's own tables can then be measured at sizes whose
    history this machine could not consume (`bench/pages.py` skips the others). `membership_only` (implies
    `own_records_only`): membership's records alone, no campaigns, meetings, recipients or deliveries
    (`bench/pages.py` skips the other services' pages)."""
    from shared.topics import CONSUMER_GROUPS

    own_records_only = own_records_only or membership_only
    if resume and membership_only:
        raise ValueError("--resume finishes a full generation; a membership-only one has nothing to resume")
    existing = read_manifest()
    if existing:
        say(f"network: already generated on this stack ({existing['members']:,} members); reusing it")
        return existing
    started = time.monotonic()
    notifications_topics = ("membership.members", "events.meetings", "events.rsvps", "campaigns.actions")
    launcher.stop_service("notifications")
    dbs = {s: await asyncpg.connect(asyncpg_dsn(s)) for s in launcher.SERVICES}
    try:
        if resume:
            net, facts = await from_databases(dbs, seed)
            await dbs["notifications"].execute("DELETE FROM deliveries WHERE body_text LIKE '%(bench)'")
            produced = 0
            say(f"network: resuming with {net.n:,} members and {facts['meetings']:,} meetings from the databases")
        else:
            net = Network(n, seed)
            net.make_members()
            async with Publisher() as pub:
                await units(net, dbs, pub)
                history = Discard() if own_records_only else pub
                await members(net, dbs, history, mirror=not membership_only)
                if membership_only:
                    facts = {"campaigns": 0, "asks": 0, "actions": 0, "active_members": 0, "confirmations": 0,
                             "meetings": 0, "rsvps": 0, "attended": 0, "group_meetings": []}
                else:
                    facts = await campaigns(net, dbs, history)
                    facts.update(await meetings(net, dbs, history))
                await pub.flush()
                produced = pub.sent
            say(f"network: {produced:,} events produced in {time.monotonic() - started:.0f} s; the delivery log "
                "next")
        if membership_only:
            sent = 0
        else:
            sent = await (deliveries_in_sql(net, dbs) if own_records_only else deliveries(net, dbs, facts))
        if not own_records_only:
            async with Publisher() as pub:
                produced += await publish_deliveries(dbs["notifications"], pub)
        await skip_group_to_end("notifications", notifications_topics)
    except BaseException:
        say("network: generation stopped; notifications is left stopped (its group would email the history): "
            "finish with `bench/network.py --resume`")
        raise
    finally:
        for conn in dbs.values():
            await conn.close()
    launcher.start_service("notifications")
    launcher.service_ready("notifications", 120)
    say("network: waiting for the services' consumers to work through the history")
    waited = time.monotonic()
    groups = [g for g in CONSUMER_GROUPS]
    last = -1
    while True:
        lag = await consumer_lag(groups)
        if lag == 0:
            break
        if lag != last:
            say(f"network: {lag:,} records still to consume")
            last = lag
        await asyncio.sleep(15)
    biggest = max(range(GROUPS), key=lambda g: len(net.by_group[g]))
    median = sorted(range(GROUPS), key=lambda g: len(net.by_group[g]))[GROUPS // 2]
    sample = [net.members[i] for i in net.rnd.sample(net.by_group[biggest], min(50, len(net.by_group[biggest])))]
    manifest = {
        "members": net.n, "seed": seed, "regions": net.regions, "groups": net.groups,
        "biggest_group": net.groups[biggest], "biggest_group_members": len(net.by_group[biggest]),
        "median_group": net.groups[median], "median_group_members": len(net.by_group[median]),
        "region_of_biggest": net.regions[net.group_region[biggest]],
        "sample_members": [{"id": m.id, "name": m.name, "email": m.email} for m in sample],
        "most_active_member": None,
        "meetings": facts["meetings"], "rsvps": facts["rsvps"], "attended": facts["attended"],
        "campaigns": facts["campaigns"], "asks": facts["asks"], "actions": facts["actions"],
        "active_members": facts["active_members"], "deliveries": sent, "events_produced": produced,
        "seconds_generating": round(waited - started), "seconds_consuming": round(time.monotonic() - waited),
        "generated_at": net.now.isoformat(), "read_models": not own_records_only,
        "membership_only": membership_only,
    }
    path = manifest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1))
    counts = {k: v for k, v in manifest.items() if isinstance(v, int)}
    say(f"network: done in {time.monotonic() - started:.0f} s: {json.dumps(counts)}")
    return manifest


async def _announce_only() -> None:
    conn = await asyncpg.connect(asyncpg_dsn("notifications"))
    try:
        async with Publisher() as pub:
            say(f"network: {await publish_deliveries(conn, pub):,} deliveries announced")
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/network.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=FULL_MEMBERS)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MEMBERS:,} members")
    parser.add_argument("--resume", action="store_true",
                        help="finish a generation that stopped after producing its history (delivery log onwards)")
    parser.add_argument("--announce-deliveries", action="store_true",
                        help="only publish NotificationSent for the delivery log already written (a network "
                             "generated before the generator did it)")
    parser.add_argument("--own-records-only", action="store_true",
                        help="only each service's own records and the delivery log, no history on the topics (so "
                             "no read model): what a size whose history this machine cannot consume allows")
    parser.add_argument("--membership-only", action="store_true",
                        help="only membership's records (regions, groups, members; implies --own-records-only): "
                             "for the member list's pages, no campaigns, meetings or deliveries")
    args = parser.parse_args(argv)
    launcher.ensure_up(services=True)
    if args.announce_deliveries:
        asyncio.run(_announce_only())
        return 0
    asyncio.run(generate(QUICK_MEMBERS if args.quick else args.members, resume=args.resume,
                         own_records_only=args.own_records_only, membership_only=args.membership_only))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
