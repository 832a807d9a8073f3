"""A sender killed in the middle of an email never loses it: the delivery is recorded as sent only once the relay
has accepted it, and a killed sender's deliveries are sent again when their lease runs out.

The SMTP catcher holds its reply to the final "." for addresses starting with `stall` (the message not kept: the
relay did not accept) or `lostreply` (the message kept: the relay accepted, its "250" never reached the sender),
so the test kills notifications exactly inside that window. For `slowreply` it keeps the message and sends its
"250" a few seconds late: a service asked to stop (SIGTERM, as a rolling upgrade does) in that moment.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from deploy.local import launcher
from tests.support.joins import join
from tests.support.mail import MailCatcher
from tests.support.people import unique_email

pytestmark = pytest.mark.fault

WELCOME_SQL = "SELECT id, status, attempts, sent_at FROM deliveries WHERE kind = 'welcome' AND recipient_email = $1"


async def wait_until_held(address: str, timeout: float = 90.0) -> None:
    """Until the catcher holds the reply to `address`'s message (the sender has written it all, and its '.')."""
    async with httpx.AsyncClient(base_url=launcher.SMTP_CATCHER_URL, timeout=10) as client:
        for _ in range(int(timeout / 0.1)):
            if address.lower() in (await client.get("/api/held")).json():
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"the catcher never held a message to {address}")


def kill_and_restart_notifications() -> None:
    launcher.kill_service("notifications")
    launcher.start_service("notifications")
    assert launcher.service_ready("notifications", 60)


async def test_a_sender_killed_before_the_relay_accepted_sends_the_email_once_its_lease_runs_out(
    gateway, mail: MailCatcher, notifications_db
):
    email = unique_email("stall")
    assert await join(gateway, email) == 303
    await wait_until_held(email)
    in_flight = await notifications_db.fetchrow(WELCOME_SQL, email)
    assert (in_flight["status"], in_flight["sent_at"]) == ("sending", None)  # not recorded before the relay accepts

    kill_and_restart_notifications()

    await mail.wait_for(email, timeout=120)
    [welcome] = await mail.settle(email, seconds=2)
    assert welcome["subject"].startswith("Welcome")
    sent = await notifications_db.fetchrow(WELCOME_SQL, email)
    assert (sent["id"], sent["status"], sent["attempts"]) == (in_flight["id"], "sent", 1)


async def test_a_sender_killed_after_the_relay_accepted_sends_a_second_copy_with_the_same_message_id(
    gateway, mail: MailCatcher, notifications_db
):
    email = unique_email("lostreply")
    assert await join(gateway, email) == 303
    await wait_until_held(email)
    [first] = await mail.messages(email)  # the relay kept it; the sender has not heard so
    assert (await notifications_db.fetchrow(WELCOME_SQL, email))["status"] == "sending"

    kill_and_restart_notifications()

    await mail.wait_for(email, count=2, timeout=120)
    copies = await mail.settle(email, seconds=2)
    assert len(copies) == 2  # at least once: the documented duplicate, never a loss
    message_ids = {copy["headers"]["Message-ID"] for copy in copies}
    assert message_ids == {first["headers"]["Message-ID"]}  # one Message-ID: the receiver can drop the second
    assert (await notifications_db.fetchrow(WELCOME_SQL, email))["status"] == "sent"


async def test_a_sender_asked_to_stop_while_the_relay_answers_records_the_email_and_never_sends_it_again(
    gateway, mail: MailCatcher, notifications_db
):
    """SIGTERM is not a crash: the sender finishes the email in hand (the relay's "250" and its record's COMMIT)
    before the service exits. A fresh-clone CI run (2026-12-07) saw the rolling upgrade send one welcome twice:
    the stopping service cancelled its sender while it waited for the relay's answer, the relay kept the email,
    the record was rolled back, and the lease sent it again."""
    email = unique_email("slowreply")
    assert await join(gateway, email) == 303
    await wait_until_held(email)
    assert (await notifications_db.fetchrow(WELCOME_SQL, email))["status"] == "sending"

    assert launcher.stop_service("notifications", sig=signal.SIGTERM, timeout=30)  # not SIGKILLed after a wait
    sent = await notifications_db.fetchrow(WELCOME_SQL, email)
    assert (sent["status"], sent["attempts"]) == ("sent", 1)  # recorded before the process went
    launcher.start_service("notifications")
    assert launcher.service_ready("notifications", 60)

    [welcome] = await mail.settle(email, seconds=3)
    assert welcome["subject"].startswith("Welcome")
    assert (await notifications_db.fetchrow(WELCOME_SQL, email))["status"] == "sent"
