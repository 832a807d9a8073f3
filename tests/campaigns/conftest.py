"""Fixtures for the campaigns service's tests: the real PostgreSQL and Kafka (the launcher's), a database of its
own, and the service itself running in this process behind real HTTP (uvicorn).

Its engagement consumer group starts at the end of the topics (it publishes level changes, so it must not
replay history); its reporting group starts at the beginning, like a new deployment, so a rebuild from the
beginning of the topics can be compared with it.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from deploy.local import launcher
from services.campaigns.auth import OrganiserScope, issue
from services.campaigns.reporting import REPORTING_TOPICS
from services.campaigns.views import member_token
from shared import topics
from shared.config import Settings
from shared.crypto import new_key, seal
from shared.events.catalog import (
    AttendanceRecorded,
    MeetingScheduled,
    MemberJoined,
    OrganisationUnitDefined,
    RsvpReceived,
)
from shared.events.envelope import Envelope, EventData

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def campaigns_db_url() -> str:
    """Kafka and PostgreSQL up, every topic created, and a fresh, migrated database for these tests."""
    launcher.ensure_up(services=False)
    url = launcher.database_url("campaigns").rsplit("/", 1)[0] + f"/{TEST_DB}"
    maintenance = _dsn(launcher.database_url("campaigns")).rsplit("/", 1)[0] + "/postgres"

    async def prepare() -> None:
        conn = await asyncpg.connect(maintenance)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{TEST_DB}"')
        finally:
            await conn.close()
        # The test groups' dead-letter topics too, so a poison message cannot stall them.
        await topics.create_topics(launcher.KAFKA_BOOTSTRAP, extra=tuple(
            topics.TopicSpec(topics.dead_letter_topic(g), "test dead letters", partitions=1, retention_ms=86_400_000)
            for g in (ENGAGEMENT_GROUP, REPORTING_GROUP)))

    asyncio.run(prepare())
    from shared.migrations import upgrade

    upgrade(SERVICE_DIR, url)  # the real migrations, as `python -m services.campaigns migrate` runs them
    return url


@pytest.fixture(scope="session")
def campaigns_port() -> int:
    return _free_port()


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


class CampaignsServer:
    """The campaigns service in this process on a real port."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.app: Any = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        from services.campaigns.main import create_app

        self.app = create_app(self.settings, engagement_group=ENGAGEMENT_GROUP, reporting_group=REPORTING_GROUP)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
                                lifespan="on", timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 60
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the campaigns service stopped while starting")
            if time.monotonic() > deadline:
                raise TimeoutError("the campaigns service did not start within 60 s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, timeout=30)
        self._server = self._task = None

    @property
    def campaigns(self) -> Any:
        return self.app.state.campaigns

    @property
    def engagement(self) -> Any:
        return self.app.state.engagement

    @property
    def db(self) -> Any:
        return self.app.state.runtime.db


async def _group_starts_at_the_end(group: str, topic_names: tuple[str, ...]) -> None:
    """Commit the current end offsets for a new consumer group, so it skips the topics' history."""
    consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in topic_names for p in sorted(await consumer._client._wait_on_metadata(t))]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.commit({tp: offset for tp, offset in ends.items()})
    finally:
        await consumer.stop()


@pytest.fixture(scope="session")
async def campaigns_server(campaigns_settings: Settings, campaigns_port: int,
                           kafka: KafkaWatcher) -> AsyncIterator[CampaignsServer]:
    await _group_starts_at_the_end(ENGAGEMENT_GROUP, ENGAGEMENT_TOPICS)
    server = CampaignsServer(campaigns_settings, campaigns_port)
    await server.start()
    await server.campaigns.load_mp_dataset(SAMPLE_MPS.read_text(encoding="utf-8"))
    yield server
    await server.stop()


@pytest.fixture
async def client(campaigns_server: CampaignsServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=campaigns_server.base_url, timeout=60, follow_redirects=False) as c:
        yield c


@pytest.fixture
async def db(campaigns_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_dsn(campaigns_db_url))
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
    producer = AIOKafkaProducer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    sent = []
    try:
        for event in events:
            env = Envelope.wrap(event, occurred_at=occurred_at)
            await producer.send_and_wait(event.topic, value=env.to_bytes(), key=env.subject_id.encode(),
                                         headers=[("type", env.type.encode())])
            sent.append(env)
    finally:
        await producer.stop()
    return sent


def joined(member_id: str, region_id: str | None, group_ids: list[str] | None = None, **overrides: Any) -> MemberJoined:
    key = new_key()
    fields: dict[str, Any] = dict(
        member_id=member_id,
        email=seal(f"{member_id}@example.org", key, key_id=member_id, owner="membership"),
        name=seal("Someone", key, key_id=member_id, owner="membership"),
        region_id=region_id,
        group_ids=group_ids or [],
        engagement_level="informed",
        email_consent=True,
        consent_wording_version="v1",
        source="join-form",
        confirmation_required=True,
        joined_at=datetime.now(UTC),
    )
    fields.update(overrides)
    return MemberJoined(**fields)


def unit(kind: str, name: str, parent_id: str | None = None) -> OrganisationUnitDefined:
    return OrganisationUnitDefined(unit_id=str(uuid.uuid4()), kind=kind, name=name, parent_id=parent_id)  # type: ignore[arg-type]


class KafkaWatcher:
    """Collects every record on the campaigns service's topics from the moment the session starts."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._new = asyncio.Event()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, enable_auto_commit=False)
        await consumer.start()
        parts = [TopicPartition(t, p) for t in WATCHED for p in sorted(await consumer._client._wait_on_metadata(t))]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:
            await consumer.position(tp)  # fix the start now, before any test produces
        self._consumer = consumer
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for recs in batch.values():
                self.records.extend(recs)
            if batch:
                self._new.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()

    def envelopes(self, predicate: Callable[[Envelope], bool] = lambda e: True) -> list[Envelope]:
        return [e for r in self.records if r.value is not None and predicate(e := Envelope.from_bytes(r.value))]

    def keyed(self, predicate: Callable[[Envelope], bool]) -> list[tuple[str, Envelope]]:
        """(Kafka key, envelope) of the matching records."""
        return [(r.key.decode(), e) for r in self.records
                if r.value is not None and predicate(e := Envelope.from_bytes(r.value))]

    async def wait_for(self, predicate: Callable[[Envelope], bool], count: int = 1,
                       timeout: float = 30.0, ours: asyncpg.Connection | None = None) -> list[Envelope]:
        """At least `count` envelopes matching, within `timeout` seconds.

        With `ours` (the test database), only events this test server published (found in its outbox) count:
        the system's own campaigns service may publish level changes for the same test members too.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.envelopes(predicate)
            if ours is not None and found:
                mine = {r[0] for r in await ours.fetch("SELECT event_id FROM outbox WHERE event_id = ANY($1::uuid[])",
                                                       [e.event_id for e in found])}
                found = [e for e in found if e.event_id in mine]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected {count} matching event(s) on Kafka, found {len(found)}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), timeout=min(remaining, 1.0))
            except TimeoutError:
                pass


@pytest.fixture(scope="session")
async def kafka(campaigns_db_url: str) -> AsyncIterator[KafkaWatcher]:
    watcher = KafkaWatcher()
    await watcher.start()
    yield watcher
    await watcher.stop()


def of_type(event_type: str, **data: Any) -> Callable[[Envelope], bool]:
    return lambda e: e.type == event_type and all(e.data.get(k) == v for k, v in data.items())


async def poll(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Wait until `await check()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


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
