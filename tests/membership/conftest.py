"""Fixtures for the membership service's tests: the real PostgreSQL and Kafka (the launcher's), a database of
its own, and the service itself running in this process behind real HTTP (uvicorn).

The service signs with the running system's SECRET_KEY, so links the system's notifications service
puts in emails, and organiser sessions it issues, work across both.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy.local import launcher
from shared import topics
from shared.config import Settings
from shared.events.envelope import Envelope

SERVICE_DIR = Path(__file__).resolve().parents[2] / "services" / "membership"
TEST_DB = "groundswell_membership_test"
WATCHED = (topics.MEMBERSHIP_MEMBERS, topics.MEMBERSHIP_ORGANISATION, topics.MEMBERSHIP_SUBJECT_KEYS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def membership_test_db_url() -> str:
    """Kafka and PostgreSQL up, every topic created, and a fresh, migrated database for these tests."""
    launcher.ensure_up(services=False)
    url = launcher.database_url("membership").rsplit("/", 1)[0] + f"/{TEST_DB}"
    maintenance = _dsn(launcher.database_url("membership")).rsplit("/", 1)[0] + "/postgres"

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

    upgrade(SERVICE_DIR, url)  # the real migrations, as `python -m services.membership migrate` runs them
    return url


@pytest.fixture(scope="session")
def membership_port() -> int:
    return _free_port()


@pytest.fixture(scope="session")
def membership_settings(membership_test_db_url: str, membership_port: int) -> Settings:
    return Settings(
        service_name="membership",
        instance="test",
        database_url=membership_test_db_url,
        kafka_bootstrap_servers=launcher.KAFKA_BOOTSTRAP,
        public_base_url=f"http://127.0.0.1:{membership_port}",
        secret_key=launcher.secret_key(),
        log_json=False,
        log_level="WARNING",
        outbox_poll_interval_s=0.5,
    )


class MembershipServer:
    """The membership service in this process on a real port."""

    def __init__(self, settings: Settings, port: int, reactions_group: str) -> None:
        self.settings = settings
        self.port = port
        self.reactions_group = reactions_group
        self.base_url = f"http://127.0.0.1:{port}"
        self.app: Any = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        from services.membership.main import create_app

        self.app = create_app(self.settings, reactions_group=self.reactions_group)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            proxy_headers=True,
            forwarded_allow_ips="127.0.0.1",
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 60
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the membership service stopped while starting")
            if time.monotonic() > deadline:
                raise TimeoutError("the membership service did not start within 60 s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, timeout=30)
        self._server = self._task = None


async def group_starts_at_the_end(group: str, topic_names: tuple[str, ...]) -> None:
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


REACTION_TOPICS = (
    topics.EVENTS_RSVPS,
    topics.EVENTS_SUBJECT_KEYS,
    topics.CAMPAIGNS_ACTIONS,
    topics.CAMPAIGNS_ENGAGEMENT,
)


@pytest.fixture(scope="session")
async def membership_server(
    membership_settings: Settings, membership_port: int, kafka: KafkaWatcher
) -> AsyncIterator[MembershipServer]:
    group = f"membership.reactions.test-{uuid.uuid4().hex[:8]}"
    await group_starts_at_the_end(group, REACTION_TOPICS)
    server = MembershipServer(membership_settings, membership_port, group)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(membership_server: MembershipServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=membership_server.base_url, timeout=60, follow_redirects=False) as c:
        yield c


@pytest.fixture
async def db(membership_test_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_dsn(membership_test_db_url))
    yield conn
    await conn.close()


class KafkaWatcher:
    """Collects every record on membership's topics from the moment the session starts."""

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
        found = []
        for r in self.records:
            if r.value is None:
                continue
            env = Envelope.from_bytes(r.value)
            if predicate(env):
                found.append(env)
        return found

    def tombstones(self, topic: str) -> list[str]:
        return [r.key.decode() for r in self.records if r.value is None and r.topic == topic]

    async def wait_for(
        self, predicate: Callable[[Envelope], bool], count: int = 1, timeout: float = 30.0
    ) -> list[Envelope]:
        """At least `count` envelopes matching, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.envelopes(predicate)
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

    async def settle(self, predicate: Callable[[Envelope], bool], seconds: float = 2.0) -> list[Envelope]:
        """Envelopes matching after the relay had time to publish anything more (to prove there was none)."""
        await asyncio.sleep(seconds)
        return self.envelopes(predicate)

    async def wait_for_tombstone(self, topic: str, key: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while key not in self.tombstones(topic):
            if time.monotonic() > deadline:
                raise AssertionError(f"no tombstone for {key} on {topic}")
            await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
async def kafka(membership_test_db_url: str) -> AsyncIterator[KafkaWatcher]:
    watcher = KafkaWatcher()
    await watcher.start()
    yield watcher
    await watcher.stop()


def of_member(member_id: str, event_type: str) -> Callable[[Envelope], bool]:
    return lambda e: e.type == event_type and e.subject_id == member_id


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


def unique_email(prefix: str = "member") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.org"


def join_form(email: str, **overrides: Any) -> dict[str, Any]:
    """A valid join form (as the browser posts it)."""
    form: dict[str, Any] = {"name": "Olive Morris", "email": email, "postcode": "B15 2TT", "email_consent": "yes"}
    form.update(overrides)
    return form


async def member_by_email(db: asyncpg.Connection, email: str) -> Any:
    return await db.fetchrow("SELECT * FROM members WHERE email_normalised = $1", email)


async def make_organiser(
    db: asyncpg.Connection, scope_type: str = "network", scope_id: str | None = None
) -> tuple[str, dict[str, str]]:
    """An active organiser account and the headers of its session (as if signed in)."""
    from shared import auth

    organiser_id = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO organisers (id, email_normalised, name, scope_type, scope_id, status) "
        "VALUES ($1, $2, 'Test Organiser', $3, $4, 'active')",
        organiser_id,
        unique_email("organiser"),
        scope_type,
        scope_id,
    )
    token = auth.issue(launcher.secret_key(), auth.OrganiserScope(organiser_id, scope_type, scope_id))
    return organiser_id, {"Authorization": f"Bearer {token}"}
