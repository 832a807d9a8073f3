"""Fixtures for the events service's tests: the real PostgreSQL and Kafka (the launcher's), a database of
its own, and the service itself running in this process behind real HTTP (uvicorn), restartable.
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
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy.local import launcher
from services.events.auth import OrganiserScope, issue
from shared import topics
from shared.config import Settings
from shared.events.envelope import Envelope

SERVICE_DIR = Path(__file__).resolve().parents[2] / "services" / "events"
TEST_DB = "groundswell_events_test"
SECRET = "events-test-secret-key-for-signing-0123456789"
WATCHED = (topics.EVENTS_MEETINGS, topics.EVENTS_RSVPS, topics.EVENTS_SUBJECT_KEYS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def events_db_url() -> str:
    """Kafka and PostgreSQL up, every topic created, and a fresh, migrated database for these tests."""
    launcher.ensure_up(services=False)
    url = launcher.database_url("events").rsplit("/", 1)[0] + f"/{TEST_DB}"
    maintenance = _dsn(launcher.database_url("events")).rsplit("/", 1)[0] + "/postgres"

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

    upgrade(SERVICE_DIR, url)  # the real migrations, as `python -m services.events migrate` runs them
    return url


@pytest.fixture(scope="session")
def events_port() -> int:
    return _free_port()


@pytest.fixture(scope="session")
def events_settings(events_db_url: str, events_port: int) -> Settings:
    return Settings(
        service_name="events",
        instance="test",
        database_url=events_db_url,
        database_pool_size=25,  # 50 connections: 500 simultaneous RSVPs wait on the meeting's lock, not the pool
        kafka_bootstrap_servers=launcher.KAFKA_BOOTSTRAP,
        public_base_url=f"http://127.0.0.1:{events_port}",
        secret_key=SECRET,
        log_json=False,
        log_level="WARNING",
        outbox_poll_interval_s=0.5,
    )


class EventsServer:
    """The events service in this process on a real port; `restart()` stops it and starts a fresh app."""

    def __init__(self, settings: Settings, port: int, group: str) -> None:
        self.settings = settings
        self.port = port
        self.group = group
        self.base_url = f"http://127.0.0.1:{port}"
        self.app: Any = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        from services.events.main import create_app

        self.app = create_app(self.settings, members_group=self.group, reminder_poll_interval_s=0.2)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
                                lifespan="on", timeout_graceful_shutdown=5, backlog=2048)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 60
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the events service stopped while starting")
            if time.monotonic() > deadline:
                raise TimeoutError("the events service did not start within 60 s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, timeout=30)
        self._server = self._task = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def service(self) -> Any:
        return self.app.state.events


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
async def events_server(
    events_settings: Settings, events_port: int, kafka: KafkaWatcher
) -> AsyncIterator[EventsServer]:
    group = f"events.members.test-{uuid.uuid4().hex[:8]}"
    await _group_starts_at_the_end(group, (topics.MEMBERSHIP_MEMBERS, topics.MEMBERSHIP_ORGANISATION))
    server = EventsServer(events_settings, events_port, group)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(events_server: EventsServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=events_server.base_url, timeout=60, follow_redirects=False) as c:
        yield c


@pytest.fixture
async def db(events_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_dsn(events_db_url))
    yield conn
    await conn.close()


def organiser_headers(scope_type: str = "network", scope_id: str | None = None) -> dict[str, str]:
    token = issue(SECRET, OrganiserScope(f"org-{uuid.uuid4().hex[:8]}", scope_type, scope_id))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def organiser() -> dict[str, str]:
    """Headers of a network-wide organiser."""
    return organiser_headers()


def meeting_body(**overrides: Any) -> dict[str, Any]:
    """A valid in-person meeting a week from now, unique by title."""
    start = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    body: dict[str, Any] = {
        "title": f"Organising meeting {uuid.uuid4().hex[:8]}",
        "description": "Plan the spring campaign together.",
        "kind": "in_person",
        "scope_type": "network",
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=2)).isoformat(),
        "venue": "Friends Meeting House, Birmingham",
        "capacity": 30,
    }
    body.update(overrides)
    return body


async def schedule(client: httpx.AsyncClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = await client.post("/meetings", json=meeting_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


class KafkaWatcher:
    """Collects every record on the events service's topics from the moment the session starts."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._new = asyncio.Event()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, enable_auto_commit=False)
        await consumer.start()
        parts = [
            TopicPartition(t, p)
            for t in WATCHED
            for p in sorted(await consumer._client._wait_on_metadata(t))  # the topic's partitions, fetched
        ]
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

    async def wait_for(self, predicate: Callable[[Envelope], bool], count: int = 1,
                       timeout: float = 30.0) -> list[Envelope]:
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

    async def wait_for_tombstone(self, topic: str, key: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while key not in self.tombstones(topic):
            if time.monotonic() > deadline:
                raise AssertionError(f"no tombstone for {key} on {topic}")
            await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
async def kafka(events_db_url: str) -> AsyncIterator[KafkaWatcher]:
    watcher = KafkaWatcher()
    await watcher.start()
    yield watcher
    await watcher.stop()


def of_meeting(meeting_id: str, event_type: str) -> Callable[[Envelope], bool]:
    return lambda e: e.type == event_type and e.data.get("meeting_id") == meeting_id


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
