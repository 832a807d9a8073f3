"""Fixtures for the membership service's tests: the real PostgreSQL and Kafka (the launcher's), a database of
its own, and the service itself running in this process behind real HTTP (uvicorn).

The service signs with the running system's SECRET_KEY, so links the system's notifications service
puts in emails, and organiser sessions it issues, work across both.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.local import launcher
from shared import tokens, topics
from shared.config import Settings
from shared.events.envelope import Envelope
from tests.support.inprocess import InProcessServer, asyncpg_dsn, free_port, fresh_test_database
from tests.support.inprocess import poll as poll  # the tests import it from here
from tests.support.kafka import KafkaWatcher, group_starts_at_the_end

SERVICE_DIR = Path(__file__).resolve().parents[2] / "services" / "membership"
TEST_DB = "groundswell_membership_test"
WATCHED = (topics.MEMBERSHIP_MEMBERS, topics.MEMBERSHIP_ORGANISATION, topics.MEMBERSHIP_SUBJECT_KEYS)


@pytest.fixture(scope="session")
def membership_test_db_url() -> str:
    """Kafka and PostgreSQL up, every topic created, and a fresh, migrated database for these tests."""
    return fresh_test_database("membership", TEST_DB, SERVICE_DIR)


@pytest.fixture(scope="session")
def membership_port() -> int:
    return free_port()


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


class MembershipServer(InProcessServer):
    """The membership service in this process on a real port."""

    name = "the membership service"
    uvicorn_options = {"proxy_headers": True, "forwarded_allow_ips": "127.0.0.1"}

    def __init__(self, settings: Settings, port: int, reactions_group: str) -> None:
        super().__init__(settings, port)
        self.reactions_group = reactions_group

    def create_app(self) -> Any:
        from services.membership.main import create_app

        # a group of its own for the home page's listings, so the stack's membership still receives them all
        public_group = f"{self.reactions_group}.public"
        activity_group = f"{self.reactions_group}.activity"
        return create_app(self.settings, reactions_group=self.reactions_group, public_group=public_group,
                          activity_group=activity_group, member_data_group=f"{self.reactions_group}.member-data")


REACTION_TOPICS = (
    topics.EVENTS_RSVPS,
    topics.EVENTS_SUBJECT_KEYS,
    topics.CAMPAIGNS_ACTIONS,
    topics.CAMPAIGNS_ENGAGEMENT,
)


ACTIVITY_TOPICS = (topics.EVENTS_RSVPS, topics.CAMPAIGNS_ACTIONS, topics.NOTIFICATIONS_DELIVERIES)


@pytest.fixture(scope="session")
async def membership_server(
    membership_settings: Settings, membership_port: int, kafka: KafkaWatcher
) -> AsyncIterator[MembershipServer]:
    group = f"membership.reactions.test-{uuid.uuid4().hex[:8]}"
    await group_starts_at_the_end(group, REACTION_TOPICS)
    await group_starts_at_the_end(f"{group}.activity", ACTIVITY_TOPICS)
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
    conn = await asyncpg.connect(asyncpg_dsn(membership_test_db_url))
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
async def kafka(membership_test_db_url: str) -> AsyncIterator[KafkaWatcher]:
    watcher = KafkaWatcher(WATCHED)
    await watcher.start()
    yield watcher
    await watcher.stop()


def of_member(member_id: str, event_type: str) -> Callable[[Envelope], bool]:
    return lambda e: e.type == event_type and e.subject_id == member_id


def unique_email(prefix: str = "member") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.org"


def join_form(email: str, **overrides: Any) -> dict[str, Any]:
    """A valid join form (as the browser posts it)."""
    form: dict[str, Any] = {"name": "Olive Morris", "email": email, "postcode": "B15 2TT", "email_consent": "yes"}
    form.update(overrides)
    return form


async def member_by_email(db: asyncpg.Connection, email: str) -> Any:
    return await db.fetchrow("SELECT * FROM members WHERE email_normalised = $1", email)


def request_link(settings: Settings, purpose: str, request_id: str) -> str:
    """The token of the link membership emails for a request (as the email carries it)."""
    return tokens.sign(settings.secret_key, purpose, {"r": request_id})


async def confirm_join_change(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, member_id: str
) -> None:
    """What the member does with the email a join for their address sends: open the link, press the button."""
    request_id = await db.fetchval(
        "SELECT id FROM member_requests WHERE member_id = $1 AND kind = 'join-change'", member_id
    )
    assert request_id, "no join waiting for this member to confirm"
    token = request_link(settings, tokens.JOIN_CHANGE, request_id)
    assert (await client.get("/join/changes", params={"token": token})).status_code == 200
    assert (await client.post("/join/changes", data={"token": token})).status_code == 200


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


async def confirmed_request(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, member_id: str, kind: str
) -> httpx.Response:
    """A download or an erasure as a member does it: asked for through their preferences link, then confirmed
    through the link emailed to them (its page, then its button); the button's answer."""
    preferences = tokens.sign(settings.secret_key, tokens.PREFERENCES, {"m": member_id})
    if kind == "download":
        asked = await client.post("/me/data", data={"token": preferences})
    else:
        asked = await client.post("/me/erase", data={"token": preferences, "confirm": "erase"})
    assert asked.status_code == 200 and "Check your email" in asked.text
    request_id = await db.fetchval(
        "SELECT id FROM member_requests WHERE member_id = $1 AND kind = $2", member_id, kind
    )
    token = request_link(settings, tokens.MEMBER_RIGHTS, request_id)
    assert (await client.get("/me/confirm", params={"token": token})).status_code == 200
    return await client.post("/me/confirm", data={"token": token})
