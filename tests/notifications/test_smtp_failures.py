"""What the relay says decides what happens: a 4xx is retried with backoff, a 5xx is recorded and published."""

from __future__ import annotations

import asyncio

from shared.events.envelope import Envelope
from shared.topics import NOTIFICATIONS_DELIVERIES
from tests.support.joins import join, member_ids
from tests.support.kafka import wait_for_records
from tests.support.people import unique_email


async def test_a_temporary_refusal_is_retried_until_the_welcome_is_delivered(gateway, mail, notifications_db):
    email = unique_email("tempfail")  # the catcher answers 451 to its first two attempts
    assert await join(gateway, email) == 303
    [welcome] = await mail.wait_for(email, timeout=60)
    assert welcome["subject"].startswith("Welcome")
    row = await notifications_db.fetchrow(
        "SELECT status, attempts, last_error FROM deliveries WHERE kind = 'welcome' AND recipient_email = $1", email
    )
    assert row["status"] == "sent" and row["attempts"] == 3 and row["last_error"].startswith("451")


async def test_a_permanent_refusal_is_recorded_and_published_as_notification_failed(
    gateway, mail, membership_db, notifications_db
):
    email = unique_email("reject")  # the catcher answers 550
    assert await join(gateway, email) == 303
    member_id = (await member_ids(membership_db, [email]))[email]
    for _ in range(150):
        status = await notifications_db.fetchval(
            "SELECT status FROM deliveries WHERE kind = 'welcome' AND recipient_id = $1", member_id
        )
        if status == "failed":
            break
        await asyncio.sleep(0.2)
    assert status == "failed"
    [failed] = await wait_for_records(
        NOTIFICATIONS_DELIVERIES,
        lambda r: r.key.decode() == member_id and b"NotificationFailed" in r.value,
        count=1,
    )
    data = Envelope.from_bytes(failed.value).data
    assert data["permanent"] is True and data["kind"] == "welcome" and data["error"].startswith("550")
    assert await mail.messages(email) == []
    assert await notifications_db.fetchval("SELECT hard_failures FROM address_health") is not None
