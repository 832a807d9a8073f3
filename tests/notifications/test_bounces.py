"""Bounces that arrive later: the relay accepted an email, the recipient's server refused it afterwards and a
delivery status notification (RFC 3464) comes back to the delivery's own return path (VERP). The bounce receiver
marks that delivery bounced and, after the configured number of hard bounces, suppresses the address."""

from __future__ import annotations

import asyncio
import smtplib
import uuid

import pytest

from deploy.local import launcher
from services.notifications.bounces import return_path
from services.notifications.suppression import Suppressions
from shared.config import Settings
from tests.support.emails import launch_campaign, take_action
from tests.support.joins import join
from tests.support.mail import MailCatcher
from tests.support.people import unique_email

MAIL_FROM = Settings().mail_from  # what the launcher gives the services unless MAIL_FROM is set


def dsn(to: str, recipient: str, *, action: str = "failed", status: str = "5.1.1") -> bytes:
    """A delivery status notification as a receiving server's relay writes one."""
    boundary = uuid.uuid4().hex
    return (
        "From: Mail Delivery System <MAILER-DAEMON@relay.example.net>\r\n"
        f"To: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {status[0]}50 {status} User unknown\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: Welcome\r\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()


def post_dsn(to: str, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", launcher.BOUNCE_SMTP_PORT, timeout=30) as smtp:
        smtp.sendmail("", [to], message)


async def statuses(db, ids: list[str]) -> list[str]:
    return [await db.fetchval("SELECT status FROM deliveries WHERE id = $1", i) for i in ids]


async def eventually(check, timeout: float = 30.0):
    for _ in range(int(timeout / 0.2)):
        if result := await check():
            return result
        await asyncio.sleep(0.2)
    raise AssertionError("not within the time allowed")


async def test_later_bounces_mark_their_delivery_and_suppress_the_address_after_the_configured_count(
    gateway, mail: MailCatcher, notifications_db
):
    address = unique_email("bounces-later")
    assert await join(gateway, address, name="Ada Okafor") == 303
    campaign = await launch_campaign(gateway)
    await take_action(gateway, campaign, "petition", name="Ada Okafor", email=address)
    await take_action(gateway, campaign, "pledge", name="Ada Okafor", email=address, pledge_text="I will.")
    caught = await mail.wait_for(address, count=3, timeout=60)
    rows = await notifications_db.fetch(
        "SELECT id, kind FROM deliveries WHERE recipient_email = $1 AND status = 'sent' ORDER BY created_at", address
    )
    assert sorted(r["kind"] for r in rows) == ["petition_signed", "pledge_received", "welcome"]
    ids = [r["id"] for r in rows]
    # Each went out with its own return path.
    assert sorted(m["mail_from"] for m in caught) == sorted(return_path(MAIL_FROM, i) for i in ids)

    with pytest.raises(smtplib.SMTPRecipientsRefused):  # the receiver takes only its own bounce addresses
        post_dsn(f"someone+bounce-{uuid.uuid4()}@example.org", dsn("x", address))
    post_dsn(return_path(MAIL_FROM, ids[0]), dsn(return_path(MAIL_FROM, ids[0]), address, action="delayed",
                                                 status="4.4.1"))  # fmt: skip
    await eventually(lambda: notifications_db.fetchval(
        "SELECT last_error LIKE 'bounced: 4.4.1%' FROM deliveries WHERE id = $1", ids[0]))  # fmt: skip
    assert await statuses(notifications_db, ids) == ["sent"] * 3  # a delay is not a bounce

    key = Suppressions(launcher.secret_key()).address_key(address)
    for n, delivery_id in enumerate(ids, start=1):
        post_dsn(return_path(MAIL_FROM, delivery_id), dsn(return_path(MAIL_FROM, delivery_id), address))
        await eventually(lambda d=delivery_id: notifications_db.fetchval(
            "SELECT status = 'bounced' FROM deliveries WHERE id = $1", d))  # fmt: skip
        assert await notifications_db.fetchval("SELECT hard_failures FROM address_health WHERE email = $1", key) == n
        reason = await notifications_db.fetchval("SELECT reason FROM suppressions WHERE email = $1", key)
        assert (reason == "hard_bounces") == (n >= Settings().bounce_suppress_after), (n, reason)
    # The same DSN again counts nothing more.
    post_dsn(return_path(MAIL_FROM, ids[0]), dsn(return_path(MAIL_FROM, ids[0]), address))
    assert await notifications_db.fetchval("SELECT hard_failures FROM address_health WHERE email = $1", key) == 3

    # Suppressed: the next confirmation to the address is not sent.
    other = await launch_campaign(gateway)
    await take_action(gateway, other, "petition", name="Ada Okafor", email=address)
    await eventually(lambda: notifications_db.fetchval(
        "SELECT status = 'suppressed' FROM deliveries WHERE recipient_email = $1 AND kind = 'petition_signed' "
        "AND subject_ref NOT IN (SELECT subject_ref FROM deliveries WHERE id = ANY($2))", address, ids))  # fmt: skip
    assert len(await mail.settle(address, seconds=2)) == 3
