"""An event about an RSVP that arrives while the keys consumer is releasing that RSVP's parked RsvpReceived waits
for the release and then finds the RSVP: it is handled, never dropped.

Seen in a loaded fresh-clone run (2026-12-07): someone RSVPed with an address whose RSVP stood, and its owner got
the confirmation but never the note about the repeat. The repeat's handler read the RSVP's mirror row (not there:
its RsvpReceived was parked for the key), then asked whether the key was ready, which waits for the subject's
lock; the keys consumer held it while keeping the key and releasing the RsvpReceived, so by then the key was
there, nothing was parked, and the handler returned with the row it had read before: nothing sent.

A NotificationService in this process on a migrated database of this test's own; the two consumers' transactions
are run side by side, in the order that lost the email.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from services.notifications import db as tables
from services.notifications.meetings import MeetingNotifications
from services.notifications.service import NotificationService
from shared.config import Settings
from shared.crypto import encode_key, new_key, seal
from shared.db import Database
from shared.events.catalog import (
    AttendanceRecorded,
    MeetingScheduled,
    PromotedFromWaitlist,
    RsvpReceived,
    RsvpRepeated,
)
from shared.events.envelope import Envelope
from shared.outbox import Outbox
from shared.uow import UnitsOfWork
from tests.support.inprocess import asyncpg_dsn, fresh_test_database, until_blocked_by
from tests.support.people import unique_email

SERVICE_DIR = Path(__file__).resolve().parents[2] / "services" / "notifications"
TEST_DB = "groundswell_notifications_parked_race_test"


@pytest.fixture(scope="module")
def race_db_url() -> str:
    return fresh_test_database("notifications", TEST_DB, SERVICE_DIR)


@pytest.fixture
async def meetings(race_db_url: str) -> AsyncIterator[tuple[MeetingNotifications, NotificationService]]:
    settings = Settings(
        service_name="notifications",
        instance="parked-race-test",
        database_url=race_db_url,
        secret_key="notifications-parked-race-test-secret-01",
        log_json=False,
        log_level="WARNING",
    )
    database = Database(race_db_url, pool_size=4)
    service = NotificationService(UnitsOfWork(database, Outbox(tables.delivery.outbox)), settings)
    yield MeetingNotifications(service), service
    await database.dispose()


@pytest.mark.parametrize("then", ["repeated", "promoted", "attended"])
async def test_an_event_about_an_rsvp_whose_received_is_being_released_is_handled_after_it(
    meetings: tuple[MeetingNotifications, NotificationService], race_db_url: str, then: str
) -> None:
    handlers, service = meetings
    uows = service.uows
    meeting_id, rsvp_id, key = str(uuid.uuid4()), str(uuid.uuid4()), new_key()
    start = datetime.now(UTC) + timedelta(days=3)
    scheduled = MeetingScheduled(
        meeting_id=meeting_id, title="Parked race meeting", kind="in_person", scope_type="network",
        starts_at=start, ends_at=start + timedelta(hours=2), public_url=f"http://example.org/events/{meeting_id}")
    async with uows.begin() as uow:
        await handlers.meeting_scheduled(uow, Envelope.wrap(scheduled), scheduled)

    status = "waitlisted" if then == "promoted" else "going"
    received = RsvpReceived(
        meeting_id=meeting_id, rsvp_id=rsvp_id, status=status, waitlist_position=1 if status == "waitlisted" else None,
        email=seal(unique_email("parked-race"), key, key_id=rsvp_id, owner="events"),
        name=seal("Rosa Parked", key, key_id=rsvp_id, owner="events"))
    received_envelope = Envelope.wrap(received)
    async with uows.begin() as uow:  # the members consumer: no key yet, so it is parked
        await handlers.rsvp_received(uow, received_envelope, received)

    later = {
        "repeated": RsvpRepeated(meeting_id=meeting_id, rsvp_id=rsvp_id),
        "promoted": PromotedFromWaitlist(meeting_id=meeting_id, rsvp_id=rsvp_id),
        "attended": AttendanceRecorded(meeting_id=meeting_id, rsvp_id=rsvp_id, method="organiser",
                                        attended_at=datetime.now(UTC)),
    }[then]
    handle = {"repeated": handlers.rsvp_repeated, "promoted": handlers.promoted, "attended": handlers.attendance}[then]
    later_envelope = Envelope.wrap(later)

    async def members_consumer() -> None:
        async with uows.begin() as uow:
            await handle(uow, later_envelope, later)  # type: ignore[operator]

    # The keys consumer keeps the key and releases the parked RsvpReceived, its transaction still open...
    looking = await asyncpg.connect(asyncpg_dsn(race_db_url))
    try:
        async with uows.begin() as keys_uow:
            released = await service.remember_keys(keys_uow, [(rsvp_id, encode_key(key))])
            assert [[e.event_id for e in subject] for subject in released] == [[received_envelope.event_id]]
            await handlers.rsvp_received(keys_uow, received_envelope, received)
            # ... while the members consumer handles the later event: it waits for the subject's lock.
            keys_pid = (await keys_uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            later_handled = asyncio.create_task(members_consumer())
            await until_blocked_by(looking, keys_pid)
            assert not later_handled.done()
    finally:
        await looking.close()
    await asyncio.wait_for(later_handled, 30)

    conn = await asyncpg.connect(asyncpg_dsn(race_db_url))
    try:
        mirrored = await conn.fetchval("SELECT status FROM rsvps WHERE rsvp_id = $1", rsvp_id)
        kinds = sorted(r["kind"] for r in await conn.fetch(
            "SELECT kind FROM deliveries WHERE subject_ref = ANY($1)", [rsvp_id, str(later_envelope.event_id)]))
        parked = await conn.fetchval("SELECT count(*) FROM parked_events WHERE subject_id = $1", rsvp_id)
    finally:
        await conn.close()
    expected = {
        "repeated": (["rsvp_confirmation", "rsvp_repeat"], "going"),
        "promoted": (["rsvp_promoted", "rsvp_waitlisted"], "going"),
        "attended": (["rsvp_confirmation"], "attended"),
    }[then]
    assert (kinds, mirrored) == expected
    assert parked == 0


async def test_a_members_rsvp_waiting_for_its_key_is_handled_once_whole_when_it_comes(
    meetings: tuple[MeetingNotifications, NotificationService], race_db_url: str
) -> None:
    """A member's RSVP carries their id as well as its sealed address: before its key arrives it is parked whole
    (it was stored without its address and counted as the member's participation, then counted again when the key
    released it, and a repeat meanwhile found a row with no address to write to)."""
    handlers, service = meetings
    uows = service.uows
    meeting_id, rsvp_id, member_id, key = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), new_key()
    start = datetime.now(UTC) + timedelta(days=3)
    scheduled = MeetingScheduled(
        meeting_id=meeting_id, title="Parked member meeting", kind="in_person", scope_type="network",
        starts_at=start, ends_at=start + timedelta(hours=2), public_url=f"http://example.org/events/{meeting_id}")
    received = RsvpReceived(
        meeting_id=meeting_id, rsvp_id=rsvp_id, member_id=member_id, status="going",
        email=seal(unique_email("parked-member"), key, key_id=rsvp_id, owner="events"),
        name=seal("Ada Parked", key, key_id=rsvp_id, owner="events"))
    repeated = RsvpRepeated(meeting_id=meeting_id, rsvp_id=rsvp_id, member_id=member_id)
    envelopes = [Envelope.wrap(received), Envelope.wrap(repeated)]
    async with uows.begin() as uow:
        await handlers.meeting_scheduled(uow, Envelope.wrap(scheduled), scheduled)
    async with uows.begin() as uow:
        await handlers.rsvp_received(uow, envelopes[0], received)
    async with uows.begin() as uow:
        await handlers.rsvp_repeated(uow, envelopes[1], repeated)

    conn = await asyncpg.connect(asyncpg_dsn(race_db_url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM rsvps WHERE rsvp_id = $1", rsvp_id) == 0
        assert await conn.fetchval("SELECT count(*) FROM participation WHERE member_id = $1", member_id) == 0
        async with uows.begin() as uow:  # the key comes: both are released, in order, and handled
            released = await service.remember_keys(uow, [(rsvp_id, encode_key(key))])
            assert [[e.event_id for e in subject] for subject in released] == [[e.event_id for e in envelopes]]
            await handlers.rsvp_received(uow, envelopes[0], received)
            await handlers.rsvp_repeated(uow, envelopes[1], repeated)
        kinds = sorted(r["kind"] for r in await conn.fetch(
            "SELECT kind FROM deliveries WHERE subject_ref = ANY($1)", [rsvp_id, str(envelopes[1].event_id)]))
        assert kinds == ["rsvp_confirmation", "rsvp_repeat"]
        assert await conn.fetchval("SELECT count FROM participation WHERE member_id = $1", member_id) == 1
    finally:
        await conn.close()
