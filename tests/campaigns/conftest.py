"""Fixtures for the campaigns service's tests: the real PostgreSQL and Kafka (the launcher's), a database of its
own, and the service itself running in this process behind real HTTP (uvicorn).

Its engagement consumer group starts at the end of the topics (it publishes level changes, so it must not
replay history); its reporting group starts at the beginning, like a new deployment, so a rebuild from the
beginning of the topics can be compared with it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from deploy.local import launcher
from services.campaigns.projection import REPORTING_TOPICS
from services.campaigns.views import member_token
from shared import topics
from shared.auth import OrganiserScope, issue
from shared.config import Settings
from shared.events.catalog import (
    AttendanceRecorded,
    MeetingScheduled,
    MemberJoined,
    OrganisationUnitDefined,
    RsvpReceived,
)
from shared.events.envelope import Envelope, EventData
from tests.support.inprocess import InProcessServer, asyncpg_dsn, free_port, fresh_test_database
from tests.support.inprocess import poll as poll  # the tests import it from here
from tests.support.kafka import EnvelopePublisher, KafkaWatcher, group_starts_at_the_end
from tests.support.people import member_joined

SERVICE_DIR = Path(__file__).resolve().parents[2] / "services" / "campaigns"
SAMPLE_MPS = SERVICE_DIR / "data" / "mps_sample.csv"
TEST_DB = "groundswell_campaigns_test"
SECRET = "campaigns-test-secret-key-for-signing-0123456789"
WATCHED = (topics.CAMPAIGNS_CAMPAIGNS, topics.CAMPAIGNS_ACTIONS, topics.CAMPAIGNS_ENGAGEMENT,
           topics.CAMPAIGNS_SUBJECT_KEYS)
ENGAGEMENT_TOPICS = (topics.MEMBERSHIP_MEMBERS, topics.MEMBERSHIP_ORGANISATION, topics.EVENTS_MEETINGS,
                     topics.EVENTS_RSVPS, topics.CAMPAIGNS_ACTIONS)
RUN = uuid.uuid4().hex[:8]
ENGAGEMENT_GROUP = f"campaigns.engagement.test-{RUN}"
REPORTING_GROUP = f"campaigns.reporting.test-{RUN}"
REVOCATIONS_GROUP = f"campaigns.revocations.test-{RUN}"


@pytest.fixture(scope="session")
def campaigns_db_url() -> str:
    """Kafka and PostgreSQL up, every topic created, and a fresh, migrated database for these tests."""
    # The test groups' dead-letter topics too, so a poison message cannot stall them.
    return fresh_test_database("campaigns", TEST_DB, SERVICE_DIR, extra_topics=tuple(
        topics.TopicSpec(topics.dead_letter_topic(g), "test dead letters", partitions=1, retention_ms=86_400_000)
        for g in (ENGAGEMENT_GROUP, REPORTING_GROUP, REVOCATIONS_GROUP)))


@pytest.fixture(scope="session")
def campaigns_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def campaigns_settings(campaigns_db_url: str, campaigns_port: int) -> Settings:
    return Settings(
        service_name="campaigns",
        instance="test",
        database_url=campaigns_db_url,
        kafka_bootstrap_servers=launcher.KAFKA_BOOTSTRAP,
        public_base_url=f"http://127.0.0.1:{campaigns_port}",
        secret_key=SECRET,
        log_json=False,
        log_level="WARNING",
        outbox_poll_interval_s=0.5,
        consumer_retry_later_budget_s=5.0,
    )


class CampaignsServer(InProcessServer):
    """The campaigns service in this process on a real port."""

    name = "the campaigns service"

    def create_app(self) -> Any:
        from services.campaigns.main import create_app

        return create_app(self.settings, engagement_group=ENGAGEMENT_GROUP, reporting_group=REPORTING_GROUP,
                          revocations_group=REVOCATIONS_GROUP)

    @property
    def campaigns(self) -> Any:
        return self.app.state.campaigns

    @property
    def letters(self) -> Any:
        return self.app.state.letters

    @property
    def engagement(self) -> Any:
        return self.app.state.engagement

    @property
    def db(self) -> Any:
        return self.app.state.runtime.db


@pytest.fixture(scope="session")
async def campaigns_server(campaigns_settings: Settings, campaigns_port: int,
                           kafka: KafkaWatcher) -> AsyncIterator[CampaignsServer]:
    await group_starts_at_the_end(ENGAGEMENT_GROUP, ENGAGEMENT_TOPICS)
    server = CampaignsServer(campaigns_settings, campaigns_port)
    await server.start()
    await server.letters.load_mp_dataset(SAMPLE_MPS.read_text(encoding="utf-8"))
    yield server
    await server.stop()


@pytest.fixture
async def client(campaigns_server: CampaignsServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=campaigns_server.base_url, timeout=60, follow_redirects=False) as c:
        yield c


@pytest.fixture
async def db(campaigns_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(campaigns_db_url))
    yield conn
    await conn.close()


def organiser_headers(scope_type: str = "network", scope_id: str | None = None) -> dict[str, str]:
    token = issue(SECRET, OrganiserScope(f"org-{uuid.uuid4().hex[:8]}", scope_type, scope_id))
    return {"Authorization": f"Bearer {token}"}


def organiser_token(scope_type: str = "network", scope_id: str | None = None) -> str:
    return issue(SECRET, OrganiserScope(f"org-{uuid.uuid4().hex[:8]}", scope_type, scope_id))


@pytest.fixture
def organiser() -> dict[str, str]:
    """Headers of a network-wide organiser."""
    return organiser_headers()


PETITION = {"kind": "petition", "title": "Sign the petition", "addressee": "The Secretary of State for Health",
            "body": "End racism in the NHS: collect and publish the data, act on it.", "goal": 1000}
PLEDGE = {"kind": "pledge", "title": "Make a pledge", "body": "I pledge to speak up when I see racism at work."}
LETTER = {"kind": "write_to_mp", "title": "Write to your MP", "letter_subject": "Racism in healthcare",
          "body": "Dear {mp_name},\n\nAs your constituent in {constituency} I ask you to act.\n\nYours sincerely,\n"
                  "{name}, {postcode}"}
SHARE = {"kind": "share", "title": "Share the campaign", "body": "Equal care for everyone."}


async def launch(client: httpx.AsyncClient, headers: dict[str, str], *, asks: list[dict[str, Any]] | None = None,
                 **overrides: Any) -> dict[str, Any]:
    """A live campaign (unique by title) with a petition, a pledge, an MP letter and a share ask by default."""
    body: dict[str, Any] = {"title": f"Racism in healthcare {uuid.uuid4().hex[:8]}", "goal": "Equal care for everyone",
                            "summary": "Racism harms patients and staff.", "issues": ["racism in healthcare"],
                            "asks": [PETITION, PLEDGE, LETTER, SHARE] if asks is None else asks}
    body.update(overrides)
    response = await client.post("/campaigns/api/campaigns", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def ask_of(campaign: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(a for a in campaign["asks"] if a["kind"] == kind)


def ask_path(campaign: dict[str, Any], kind: str) -> str:
    return f"/campaigns/{campaign['id']}/asks/{ask_of(campaign, kind)['id']}"


async def publish(*events: EventData, occurred_at: datetime | None = None) -> list[Envelope]:
    """Publish as another service's relay does: the envelope as value, the subject as key."""
    async with EnvelopePublisher() as publisher:
        return [await publisher.publish(event, occurred_at=occurred_at) for event in events]


def joined(member_id: str, region_id: str | None, group_ids: list[str] | None = None, **overrides: Any) -> MemberJoined:
    return member_joined(member_id, email=f"{member_id}@example.org", region_id=region_id, group_ids=group_ids or [],
                         **overrides)


def unit(kind: str, name: str, parent_id: str | None = None) -> OrganisationUnitDefined:
    return OrganisationUnitDefined(unit_id=str(uuid.uuid4()), kind=kind, name=name, parent_id=parent_id)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def kafka(campaigns_db_url: str) -> AsyncIterator[KafkaWatcher]:
    watcher = KafkaWatcher(WATCHED)
    await watcher.start()
    yield watcher
    await watcher.stop()


def of_type(event_type: str, **data: Any) -> Callable[[Envelope], bool]:
    return lambda e: e.type == event_type and all(e.data.get(k) == v for k, v in data.items())


async def reporting_caught_up(timeout: float = 120.0) -> None:
    """Wait until the test's reporting group has handled every record now on its topics."""
    consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=launcher.KAFKA_BOOTSTRAP)
    await consumer.start()
    await admin.start()
    try:
        parts = [TopicPartition(t, p) for t in REPORTING_TOPICS
                 for p in sorted(await consumer._client._wait_on_metadata(t))]
        ends = await consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout
        while True:
            committed = await admin.list_consumer_group_offsets(REPORTING_GROUP)
            behind = {tp: end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items()
                      if end > (committed[tp].offset if tp in committed else 0)}
            if not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the reporting consumer is still behind: {behind}")
            await asyncio.sleep(0.3)
    finally:
        await admin.close()
        await consumer.stop()


async def quiet(campaigns_server, seconds: float = 2.0, timeout: float = 180.0) -> None:
    """Nothing new on the reporting topics for a while, and the reporting consumer has handled all of it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in REPORTING_TOPICS
                 for p in sorted(await consumer._client._wait_on_metadata(t))]
        deadline = time.monotonic() + timeout
        previous = None
        while time.monotonic() < deadline:
            await reporting_caught_up(timeout=timeout)
            ends = await consumer.end_offsets(parts)
            if ends == previous:
                return
            previous = ends
            await asyncio.sleep(seconds)
        raise AssertionError("the reporting topics did not settle")
    finally:
        await consumer.stop()


@pytest.fixture(scope="session")
async def network(campaigns_server) -> dict[str, Any]:
    """Two regions with a group each, a partner, members, a campaign with actions, meetings with attendance."""
    run = uuid.uuid4().hex[:6]
    region_a, region_b = unit("region", f"Region A {run}"), unit("region", f"Region B {run}")
    group_a, group_b = unit("group", f"Group A {run}", region_a.unit_id), unit("group", f"Group B {run}",
                                                                               region_b.unit_id)
    partner = unit("partner", f"Partner {run}")
    await publish(region_a, region_b, group_a, group_b, partner)
    a_members = [str(uuid.uuid4()) for _ in range(3)]
    b_members = [str(uuid.uuid4()) for _ in range(2)]
    await publish(
        joined(a_members[0], region_a.unit_id, [group_a.unit_id], organisation_id=partner.unit_id),
        *(joined(m, region_a.unit_id, [group_a.unit_id]) for m in a_members[1:]),
        *(joined(m, region_b.unit_id, [group_b.unit_id]) for m in b_members),
    )
    async with httpx.AsyncClient(base_url=campaigns_server.base_url, timeout=60) as client:
        headers = organiser_headers()

        async def known() -> bool:
            row = await client.get(f"/campaigns/api/engagement/members/{b_members[-1]}", headers=headers)
            return row.status_code == 200

        await poll(known)
        campaign = await launch(client, headers, title=f"Report campaign {run}", asks=[PETITION, SHARE],
                                partner_ids=[partner.unit_id])
        for member in (a_members[0], a_members[1], b_members[0]):
            r = await client.post(ask_path(campaign, "petition"), data={"member": member_token(SECRET, member)})
            assert r.status_code == 303
    start = datetime.now(UTC) - timedelta(hours=3)
    meeting_a, meeting_b = str(uuid.uuid4()), str(uuid.uuid4())
    rsvps = [str(uuid.uuid4()) for _ in range(3)]
    await publish(
        *(MeetingScheduled(meeting_id=m, title=f"Meeting {name} {run}", kind="in_person", scope_type="group",
                           scope_id=g, starts_at=start, ends_at=start + timedelta(hours=2), venue="Hall",
                           public_url=f"http://x/events/{m}")
          for m, name, g in ((meeting_a, "A", group_a.unit_id), (meeting_b, "B", group_b.unit_id))),
    )
    await publish(
        RsvpReceived(meeting_id=meeting_a, rsvp_id=rsvps[0], member_id=a_members[0], status="going"),
        RsvpReceived(meeting_id=meeting_a, rsvp_id=rsvps[1], member_id=a_members[2], status="going"),
        RsvpReceived(meeting_id=meeting_b, rsvp_id=rsvps[2], member_id=b_members[1], status="going"),
    )
    await publish(AttendanceRecorded(meeting_id=meeting_a, rsvp_id=rsvps[0], member_id=a_members[0],
                                     method="self_check_in", attended_at=start + timedelta(minutes=5)))
    return {"run": run, "region_a": region_a, "region_b": region_b, "group_a": group_a, "group_b": group_b,
            "partner": partner, "a_members": a_members, "b_members": b_members, "campaign": campaign}
