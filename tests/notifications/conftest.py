"""Fixtures for organisers' digests, feeds, follow-ups and pages: the real Kafka, PostgreSQL and SMTP catcher
(the launcher's), a notifications database of these tests' own, and the notifications service running in
this process behind real HTTP, with consumer groups of its own that start at the end of the topics.

Tests act as the other services: they publish those services' events (and members' keys) to Kafka.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from deploy.local import launcher
from shared import auth, topics
from shared.config import Settings
from shared.crypto import encode_key, new_key, seal
from shared.events.catalog import SubjectKeyIssued
from shared.events.envelope import Envelope, EventData, Sealed
from tests.support.mail import MailCatcher

SERVICE_DIR = Path(__file__).resolve().parents[2] / "services" / "notifications"
TEST_DB = "groundswell_notifications_digests_test"
SECRET = "notifications-digests-test-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def digests_db_url() -> str:
    """Kafka, PostgreSQL and the catcher up, every topic created, and a fresh, migrated database."""
    launcher.ensure_up(services=False)
    url = launcher.database_url("notifications").rsplit("/", 1)[0] + f"/{TEST_DB}"
    maintenance = _dsn(launcher.database_url("notifications")).rsplit("/", 1)[0] + "/postgres"

    async def prepare() -> None:
        conn = await asyncpg.connect(maintenance)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{TEST_DB}"')
        finally:
            await conn.close()
        await topics.create_topics(launcher.KAFKA_BOOTSTRAP)

    asyncio.run(prepare())
    from shared.migrations import upgrade

    upgrade(SERVICE_DIR, url)  # the real migrations, as `python -m services.notifications migrate` runs them
    return url


async def _groups_start_at_the_end(groups: dict[str, tuple[str, ...]]) -> None:
    """Commit the current end offsets for new consumer groups, so they skip the topics' history."""
    for group, topic_names in groups.items():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=launcher.KAFKA_BOOTSTRAP, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            parts = [
                TopicPartition(t, p) for t in topic_names for p in sorted(await consumer._client._wait_on_metadata(t))
            ]
            consumer.assign(parts)
            ends = await consumer.end_offsets(parts)
            await consumer.commit(dict(ends.items()))
        finally:
            await consumer.stop()


class NotificationsServer:
    """Notifications as `services.notifications.main` composes it, with these tests' settings and groups."""

    def __init__(self, settings: Settings, port: int, suffix: str) -> None:
        self.settings = settings
        self.port = port
        self.suffix = suffix
        self.base_url = f"http://127.0.0.1:{port}"
        self.app: Any = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None

    def create_app(self) -> Any:
        from services.notifications.main import create_app

        # Long pauses: tests run the digest and follow-up passes themselves, when they choose.
        return create_app(self.settings, group_suffix=self.suffix, loop_interval_s=3600)

    def groups(self) -> dict[str, tuple[str, ...]]:
        return {c.group: c.topics for c in self.app.state.runtime.consumers}

    async def start(self) -> None:
        self.app = self.create_app()
        await _groups_start_at_the_end(self.groups())
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 60
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the notifications service stopped while starting")
            if time.monotonic() > deadline:
                raise TimeoutError("the notifications service did not start within 60 s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, timeout=30)
        self._server = self._task = None

    @property
    def digests(self) -> Any:
        return self.app.state.digests

    @property
    def follow_ups(self) -> Any:
        return self.app.state.follow_ups


# Module scope: this second notifications deployment (its own database, its own consumer groups) must not
# outlive the tests that use it, or it would email alongside the launcher's service in later tests.
@pytest.fixture(scope="module")
async def notifications_server(digests_db_url: str) -> AsyncIterator[NotificationsServer]:
    port = _free_port()
    settings = Settings(
        service_name="notifications",
        instance="digests-test",
        database_url=digests_db_url,
        kafka_bootstrap_servers=launcher.KAFKA_BOOTSTRAP,
        smtp_host="127.0.0.1",
        smtp_port=launcher.SMTP_CATCHER_SMTP_PORT,
        public_base_url=f"http://127.0.0.1:{port}",
        secret_key=SECRET,
        network_name="Midlands Test Network",
        log_json=False,
        log_level="WARNING",
        outbox_poll_interval_s=0.5,
    )
    server = NotificationsServer(settings, port, f".digests-test-{uuid.uuid4().hex[:8]}")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(notifications_server: NotificationsServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=notifications_server.base_url, timeout=30, follow_redirects=False) as c:
        yield c


@pytest.fixture
async def db(digests_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_dsn(digests_db_url))
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def catcher() -> MailCatcher:
    return MailCatcher(launcher.SMTP_CATCHER_URL)


# Acting as the other services ----------------------------------------------------------------------------


class Publisher:
    """Publishes events as their owning services would: enveloped, keyed by subject, personal fields sealed."""

    def __init__(self) -> None:
        self._producer: AIOKafkaProducer | None = None
        self.keys: dict[str, bytes] = {}

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=launcher.KAFKA_BOOTSTRAP, acks="all", enable_idempotence=True
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, event: EventData, *, occurred_at: datetime | None = None) -> Envelope:
        assert self._producer is not None
        envelope = Envelope.wrap(event, occurred_at=occurred_at)
        await self._producer.send_and_wait(
            event.topic,
            value=envelope.to_bytes(),
            key=envelope.subject_id.encode(),
            headers=[("type", event.event_type.encode())],
        )
        return envelope

    def seal(self, key_id: str, value: str) -> Sealed:
        key = self.keys.setdefault(key_id, new_key())
        return seal(value, key, key_id=key_id, owner="membership")

    async def issue_key(self, key_id: str) -> None:
        key = self.keys.setdefault(key_id, new_key())
        await self.publish(SubjectKeyIssued(key_id=key_id, key=encode_key(key)))


@pytest.fixture(scope="module")
async def publisher(notifications_server: NotificationsServer) -> AsyncIterator[Publisher]:
    p = Publisher()
    await p.start()
    yield p
    await p.stop()


def organiser_session(organiser_id: str, scope_type: str = "network", scope_id: str | None = None) -> dict[str, str]:
    """Headers of a signed-in organiser (the session token every service verifies locally)."""
    token = auth.issue(SECRET, auth.OrganiserScope(organiser_id, scope_type, scope_id))
    return {"Authorization": f"Bearer {token}"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def poll(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Wait until `await check()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def now() -> datetime:
    return datetime.now(UTC)


class NetworkBuilder:
    """Makes a little network on Kafka, with names unique to the test: units, organisers, members, meetings,
    RSVPs, campaigns and actions, as membership, events and campaigns would publish them."""

    def __init__(self, publisher: Publisher, db_url: str) -> None:
        self.p = publisher
        self.db_url = db_url
        self.tag = uuid.uuid4().hex[:6]

    async def key_arrived(self, key_id: str) -> None:
        """Wait until notifications holds `key_id`. Keys and member events travel on different topics, and
        notifications.keys may still be behind; waiting keeps these tests about digests, not about that race."""
        conn = await asyncpg.connect(_dsn(self.db_url))
        try:
            await poll(lambda: conn.fetchval("SELECT count(*) FROM subject_keys WHERE key_id = $1", key_id))
        finally:
            await conn.close()

    async def unit(self, kind: str, name: str, parent_id: str | None = None) -> str:
        from shared.events.catalog import OrganisationUnitDefined

        unit_id = str(uuid.uuid4())
        await self.p.publish(
            OrganisationUnitDefined(unit_id=unit_id, kind=kind, name=f"{name} {self.tag}", parent_id=parent_id)
        )
        return unit_id

    async def organiser(
        self, scope_type: str, scope_id: str | None, *, key_first: bool = True, name: str = "Alex Organiser"
    ) -> tuple[str, str]:
        """(organiser id, email) of an organiser granted `scope`; their key is published before or after."""
        from shared.events.catalog import RoleGranted

        organiser_id, member_id = str(uuid.uuid4()), str(uuid.uuid4())
        email = f"organiser-{uuid.uuid4().hex[:10]}@example.org"
        if key_first:
            await self.p.issue_key(member_id)
        await self.p.publish(
            RoleGranted(
                organiser_id=organiser_id,
                member_id=member_id,
                role="organiser",
                scope_type=scope_type,
                scope_id=scope_id,
                email=self.p.seal(member_id, email),
                name=self.p.seal(member_id, name),
            )
        )
        if not key_first:
            await self.p.issue_key(member_id)
        return organiser_id, email

    async def member(
        self,
        *,
        region_id: str | None,
        group_id: str | None,
        level: str = "supporter",
        joined_at: datetime | None = None,
        name: str = "Robin Member",
        consent: bool = True,
    ) -> tuple[str, str]:
        """(member id, email) of a confirmed member who joined (key published first)."""
        from shared.events.catalog import MemberJoined

        member_id = str(uuid.uuid4())
        email = f"member-{uuid.uuid4().hex[:10]}@example.org"
        await self.p.issue_key(member_id)
        await self.key_arrived(member_id)
        await self.p.publish(
            MemberJoined(
                member_id=member_id,
                email=self.p.seal(member_id, email),
                name=self.p.seal(member_id, name),
                region_id=region_id,
                group_ids=[group_id] if group_id else [],
                engagement_level=level,
                email_consent=consent,
                consent_wording_version="v1",
                source="test",
                confirmation_required=False,
                joined_at=joined_at or now(),
            )
        )
        return member_id, email

    async def meeting(self, title: str, scope_type: str, scope_id: str | None, *, days_ahead: int = 5) -> str:
        from datetime import timedelta

        from shared.events.catalog import MeetingScheduled

        meeting_id = str(uuid.uuid4())
        start = (now() + timedelta(days=days_ahead)).replace(microsecond=0)
        await self.p.publish(
            MeetingScheduled(
                meeting_id=meeting_id,
                title=f"{title} {self.tag}",
                kind="in_person",
                scope_type=scope_type,
                scope_id=scope_id,
                starts_at=start,
                ends_at=start + timedelta(hours=2),
                venue="Friends Meeting House",
                capacity=40,
                public_url=f"http://example.org/events/{meeting_id}",
            )
        )
        return meeting_id

    async def rsvp(self, meeting_id: str, status: str = "going", member_id: str | None = None) -> str:
        from shared.events.catalog import RsvpReceived

        rsvp_id = str(uuid.uuid4())
        await self.p.publish(
            RsvpReceived(meeting_id=meeting_id, rsvp_id=rsvp_id, member_id=member_id, status=status)  # type: ignore[arg-type]
        )
        return rsvp_id

    async def campaign(self, title: str, scope_type: str = "network", scope_id: str | None = None) -> str:
        from shared.events.catalog import CampaignLaunched

        campaign_id = str(uuid.uuid4())
        await self.p.publish(
            CampaignLaunched(
                campaign_id=campaign_id,
                title=f"{title} {self.tag}",
                scope_type=scope_type,  # type: ignore[arg-type]
                scope_id=scope_id,
                goal="Win it",
            )
        )
        return campaign_id

    async def action(
        self,
        campaign_id: str,
        *,
        region_id: str | None,
        group_id: str | None,
        member_id: str | None = None,
        kind: str = "petition",
    ) -> str:
        from shared.events.catalog import ActionTaken

        action_id = str(uuid.uuid4())
        await self.p.publish(
            ActionTaken(
                action_id=action_id,
                ask_id=f"ask-{campaign_id[:8]}",
                campaign_id=campaign_id,
                kind=kind,  # type: ignore[arg-type]
                member_id=member_id,
                region_id=region_id,
                group_id=group_id,
                taken_at=now(),
            )
        )
        return action_id


@pytest.fixture
def network(publisher: Publisher, digests_db_url: str) -> NetworkBuilder:
    return NetworkBuilder(publisher, digests_db_url)
