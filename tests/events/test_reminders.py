"""Reminders: due times kept in the database, each published once, even across a restart of the service."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.events.conftest import of_meeting, schedule


async def test_reminders_default_to_a_day_and_an_hour_before(client, organiser, db):
    meeting = await schedule(client, organiser)
    rows = await db.fetch("SELECT minutes_before, due_at, status FROM reminders WHERE meeting_id = $1 ORDER BY 1",
                          meeting["id"])
    start = datetime.fromisoformat(meeting["starts_at"])
    assert [(r["minutes_before"], r["due_at"], r["status"]) for r in rows] == [
        (60, start - timedelta(hours=1), "pending"), (1440, start - timedelta(days=1), "pending")]


async def test_a_due_reminder_is_published_once(client, organiser, db, kafka):
    start = datetime.now(UTC) + timedelta(minutes=10, seconds=1)
    meeting = await schedule(client, organiser, starts_at=start.isoformat(),
                             ends_at=(start + timedelta(hours=1)).isoformat(), reminder_offsets=[10, 5])
    [event] = await kafka.wait_for(of_meeting(meeting["id"], "MeetingReminderDue"), timeout=20)
    assert event.data["minutes_before"] == 10
    assert datetime.fromisoformat(event.data["starts_at"]) == datetime.fromisoformat(meeting["starts_at"])
    row = await db.fetchrow("SELECT status, published_at FROM reminders WHERE id = $1", event.data["reminder_id"])
    assert row["status"] == "published" and row["published_at"] is not None
    pending = await db.fetchval("SELECT status FROM reminders WHERE meeting_id = $1 AND minutes_before = 5",
                                meeting["id"])
    assert pending == "pending"


async def test_a_reminder_due_while_the_service_is_down_is_sent_once_after_restart(
    events_server, client, organiser, db, kafka
):
    start = datetime.now(UTC) + timedelta(minutes=30, seconds=3)
    meeting = await schedule(client, organiser, starts_at=start.isoformat(),
                             ends_at=(start + timedelta(hours=1)).isoformat(), reminder_offsets=[30])
    await events_server.stop()
    try:
        await asyncio.sleep(max(0.0, (start - timedelta(minutes=30) - datetime.now(UTC)).total_seconds()) + 0.5)
        assert await db.fetchval("SELECT status FROM reminders WHERE meeting_id = $1", meeting["id"]) == "pending"
    finally:
        await events_server.start()
    await kafka.wait_for(of_meeting(meeting["id"], "MeetingReminderDue"), timeout=20)
    await events_server.restart()
    await asyncio.sleep(1.0)  # several reminder passes (every 0.2 s) of the restarted service
    assert len(kafka.envelopes(of_meeting(meeting["id"], "MeetingReminderDue"))) == 1
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE key = $1 AND event_type = 'MeetingReminderDue'",
                             meeting["id"]) == 1


async def test_a_cancelled_meetings_reminder_is_never_sent(client, organiser, db):
    # The reminder falls due a few seconds after scheduling: long enough for the cancel to land first on a busy
    # machine (with 1 s it once landed after), then the in-process loop (polling every 0.2 s) has its chance.
    lead = timedelta(seconds=8)
    start = datetime.now(UTC) + timedelta(minutes=10) + lead
    meeting = await schedule(client, organiser, starts_at=start.isoformat(),
                             ends_at=(start + timedelta(hours=1)).isoformat(), reminder_offsets=[10])
    await client.post(f"/meetings/{meeting['id']}/cancel", json={}, headers=organiser)
    assert datetime.now(UTC) < start - timedelta(minutes=10), "the cancel landed after the reminder was due"
    await asyncio.sleep(max(0.0, (start - timedelta(minutes=10) - datetime.now(UTC)).total_seconds()) + 1.5)
    assert await db.fetchval("SELECT status FROM reminders WHERE meeting_id = $1", meeting["id"]) == "cancelled"
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE key = $1 AND event_type = 'MeetingReminderDue'",
                             meeting["id"]) == 0
