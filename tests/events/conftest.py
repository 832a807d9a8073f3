"""Fixtures for the events service's tests: the real PostgreSQL and Kafka (the launcher's), a database of
its own, and the service itself running in this process behind real HTTP (uvicorn), restartable.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.local import launcher
from services.events.views import rsvp_token
from shared import topics
from shared.auth import OrganiserScope, issue
from shared.config import Settings
from shared.events.envelope import Envelope
from tests.support.inprocess import InProcessServer, asyncpg_dsn, free_port, fresh_test_database
from tests.support.inprocess import poll as poll  # the tests import it from here
from tests.support.kafka import KafkaWatcher, group_starts_at_the_end

SERVICE_DIR = Path(__file__).resolve().parents[2] / "services" / "events"
TEST_DB = "groundswell_events_test"
SECRET = "events-test-secret-key-for-signing-0123456789"
WATCHED = (topics.EVENTS_MEETINGS, topics.EVENTS_RSVPS, topics.EVENTS_SUBJECT_KEYS)


@pytest.fixture(scope="session")
def events_db_url() -> str:
    """Kafka and PostgreSQL up, every topic created, and a fresh, migrated database for these tests."""
    return fresh_test_database("events", TEST_DB, SERVICE_DIR)


@pytest.fixture(scope="session")
def events_port() -> int:
    return free_port()


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


class EventsServer(InProcessServer):
    """The events service in this process on a real port; `restart()` stops it and starts a fresh app."""

    name = "the events service"
    uvicorn_options = {"backlog": 2048}

    def __init__(self, settings: Settings, port: int, group: str) -> None:
        super().__init__(settings, port)
        self.group = group

    def create_app(self) -> Any:
        from services.events.main import create_app

        # a revocations group of its own too, so the stack's events keeps receiving every revocation
        return create_app(self.settings, members_group=self.group, revocations_group=f"{self.group}.revocations",
                          reminder_poll_interval_s=0.2)

    @property
    def service(self) -> Any:
        return self.app.state.events


@pytest.fixture(scope="session")
async def events_server(
    events_settings: Settings, events_port: int, kafka: KafkaWatcher
) -> AsyncIterator[EventsServer]:
    group = f"events.members.test-{uuid.uuid4().hex[:8]}"
    await group_starts_at_the_end(group, (topics.MEMBERSHIP_MEMBERS, topics.MEMBERSHIP_ORGANISATION))
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
    conn = await asyncpg.connect(asyncpg_dsn(events_db_url))
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


async def own_rsvp_link(db: asyncpg.Connection, meeting_id: str, email: str) -> str:
    """The link to an RSVP's own page, as its email carries it (the form's answer shows it to nobody)."""
    rsvp_id = await db.fetchval("SELECT id FROM rsvps WHERE meeting_id = $1 AND email = $2", meeting_id,
                                email.lower())
    assert rsvp_id is not None, f"no RSVP for {email}"
    return f"/events/rsvps/{rsvp_token(SECRET, rsvp_id)}"


async def schedule(client: httpx.AsyncClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = await client.post("/meetings", json=meeting_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="session")
async def kafka(events_db_url: str) -> AsyncIterator[KafkaWatcher]:
    watcher = KafkaWatcher(WATCHED)
    await watcher.start()
    yield watcher
    await watcher.stop()


def of_meeting(meeting_id: str, event_type: str) -> Callable[[Envelope], bool]:
    return lambda e: e.type == event_type and e.data.get("meeting_id") == meeting_id
