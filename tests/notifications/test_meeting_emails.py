"""Emails about meetings, end to end: the events service publishes, notifications emails, the catcher receives."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from icalendar import Calendar

from deploy.local import launcher
from shared.events.catalog import MeetingReminderDue
from shared.events.envelope import Envelope
from shared.topics import EVENTS_MEETINGS
from tests.support.kafka import produce
from tests.support.organisers import organiser_headers
from tests.support.people import unique_email


def _meeting(**overrides):
    start = (datetime.now(UTC) + timedelta(days=5)).replace(microsecond=0)
    body = {
        "title": f"Branch meeting {uuid.uuid4().hex[:6]}",
        "description": "Plan the petition hand-in.",
        "kind": "in_person",
        "scope_type": "group",
        "scope_id": str(uuid.uuid4()),  # a group nobody is in: no announcement emails in this test
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=2)).isoformat(),
        "venue": "Quaker Meeting House, Coventry",
        "capacity": 1,
    }
    body.update(overrides)
    return body


async def _raw(message_id: int) -> bytes:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{launcher.SMTP_CATCHER_URL}/api/messages/{message_id}/raw")).content


def _ics_from(raw: bytes) -> Calendar:
    import email

    msg = email.message_from_bytes(raw)
    for part in msg.walk():
        if part.get_content_type() == "text/calendar":
            return Calendar.from_ical(part.get_payload(decode=True))
    raise AssertionError("no text/calendar part")


async def test_rsvp_emails_confirmation_with_ics_waitlist_promotion_reminder_and_cancellation(gateway, mail):
    organiser = organiser_headers()
    created = await gateway.post("/meetings", json=_meeting(), headers=organiser)
    assert created.status_code == 201, created.text
    meeting = created.json()
    first, second = unique_email("going"), unique_email("waiting")

    async def rsvp(email: str, name: str) -> dict:
        r = await gateway.post(
            f"/meetings/{meeting['id']}/rsvps", json={"name": name, "email": email}, headers=organiser
        )
        assert r.status_code == 201, r.text
        return r.json()

    going = await rsvp(first, "Olive Morris")
    await rsvp(second, "Claudia Jones")

    [confirmation] = await mail.wait_for(first)
    assert confirmation["subject"].startswith("You're going") and "Dear Olive," in confirmation["text"]
    ics = _ics_from(await _raw(confirmation["id"]))
    [vevent] = ics.walk("VEVENT")
    assert str(vevent["uid"]).startswith(f"meeting-{meeting['id']}@") and str(vevent["status"]) == "CONFIRMED"
    assert ics.walk("VTIMEZONE") and str(ics.walk("VTIMEZONE")[0]["tzid"]) == "Europe/London"

    [waitlisted] = await mail.wait_for(second)
    assert "waitlist" in waitlisted["subject"].lower()

    # The first person cancels: the second is promoted and told so.
    cancelled = await gateway.post(f"/meetings/{meeting['id']}/rsvps/{going['id']}/cancel", headers=organiser)
    assert cancelled.status_code == 200, cancelled.text
    promoted = await mail.wait_for(second, count=2)
    assert any(m["subject"].startswith("A place came up") for m in promoted)

    # A reminder falls due (as the events service publishes it): the person going is reminded, once.
    reminder = MeetingReminderDue(
        meeting_id=meeting["id"], reminder_id=str(uuid.uuid4()), minutes_before=1440, starts_at=meeting["starts_at"]
    )
    envelope = Envelope.wrap(reminder)
    for _ in range(2):  # delivered twice: still one email
        await produce(EVENTS_MEETINGS, envelope.to_bytes(), key=meeting["id"].encode())
    reminded = await mail.wait_for(second, count=3)
    assert sum(m["subject"].startswith("Reminder:") for m in reminded) == 1

    # The meeting is cancelled: the person going gets a cancellation with STATUS:CANCELLED.
    response = await gateway.post(
        f"/meetings/{meeting['id']}/cancel", json={"reason": "Venue flooded"}, headers=organiser
    )
    assert response.status_code == 200, response.text
    messages = await mail.wait_for(second, count=4)
    [cancellation] = [m for m in messages if m["subject"].startswith("Cancelled:")]
    assert "Venue flooded" in cancellation["text"]
    [vevent] = _ics_from(await _raw(cancellation["id"])).walk("VEVENT")
    assert str(vevent["status"]) == "CANCELLED" and int(vevent["sequence"]) >= 1

    await asyncio.sleep(2)
    assert len(await mail.messages(second)) == 4  # nothing sent twice
    assert len(await mail.messages(first)) == 1  # cancelled their place: no reminder, no cancellation
