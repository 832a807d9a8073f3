"""One bad delivery never costs anyone else their email (issue 17, "found under load").

A delivery that cannot be sent (no address, an address SMTP cannot carry, an email that cannot be prepared) is
failed on its own with its reason and never reaches the relay; an error in the middle of a mail transaction
leaves the connection clean for the next email; a relay reply caused by our own protocol state is retried,
never recorded as the recipient's refusal; and erasing a member cancels a delivery a sender already holds.

Against the real SMTP catcher: the running notifications service with rows injected into its database, and a
DeliveryWorker in this process on a migrated database of these tests' own (where faults are injected into it).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
import asyncpg
import pytest

from deploy.local import launcher
from services.notifications import db as tables
from services.notifications.delivery import DeliveryWorker, RecordConnection
from services.notifications.mailer import Mailer
from services.notifications.service import NotificationService
from shared.config import Settings
from shared.db import Database
from shared.events.catalog import MemberErased
from shared.events.envelope import Envelope
from shared.outbox import Outbox
from shared.topics import NOTIFICATIONS_DELIVERIES
from shared.uow import UnitsOfWork
from tests.support.inprocess import asyncpg_dsn, fresh_test_database, poll
from tests.support.kafka import EnvelopePublisher, wait_for_records
from tests.support.mail import MailCatcher
from tests.support.people import unique_email

SERVICE_DIR = Path(__file__).resolve().parents[2] / "services" / "notifications"
TEST_DB = "groundswell_notifications_unsendable_test"
UNUSABLE = "not an address"  # aiosmtplib raises ValueError on it in RCPT, after MAIL FROM has gone


async def queue(
    conn: asyncpg.Connection, email: str | None, *, kind: str = "welcome", recipient_id: str | None = None,
    seconds_ago: float = 0.0,
) -> str:
    """A due delivery, as the service queues one (`seconds_ago` orders a batch: the oldest is sent first)."""
    delivery_id = str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO deliveries (id, kind, subject_ref, recipient_id, recipient_email, subject, body_text, "
        "next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 'Hello.', now() - make_interval(secs => $7))",
        delivery_id, kind, delivery_id, recipient_id or str(uuid.uuid4()), email, f"Delivery {delivery_id}",
        seconds_ago,
    )
    return delivery_id


async def row(conn: asyncpg.Connection, delivery_id: str) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT status, attempts, last_error, recipient_email, lease_until FROM deliveries WHERE id = $1", delivery_id
    )


async def delivered_once_each(mail: MailCatcher, addresses: list[str]) -> None:
    """Every address got exactly one email, also after time for a duplicate to arrive."""
    for address in addresses:
        await mail.wait_for(address, timeout=60)
    await asyncio.sleep(2)
    counts = {address: len(await mail.messages(address)) for address in addresses}
    assert set(counts.values()) == {1}, counts


# The running service --------------------------------------------------------------------------------------


async def test_the_service_fails_what_it_cannot_send_and_sends_everyone_elses_email_once(mail, notifications_db):
    # The bad rows are the oldest due, so they are claimed first, in the same batch as the ordinary ones.
    no_address = await queue(notifications_db, None, kind="rsvp_confirmation", seconds_ago=60)
    unusable = await queue(notifications_db, f"{UNUSABLE} {uuid.uuid4().hex[:8]}@example.org", seconds_ago=59)
    ordinary = [unique_email("beside-bad") for _ in range(6)]
    ids = [await queue(notifications_db, email, seconds_ago=30 - i) for i, email in enumerate(ordinary)]

    await delivered_once_each(mail, ordinary)
    assert [(await row(notifications_db, i))["status"] for i in ids] == ["sent"] * 6

    failed = {d: await row(notifications_db, d) for d in (no_address, unusable)}
    # Set aside when claimed (never attempted); refused by the mailer before MAIL FROM (one attempt).
    assert tuple(failed[no_address].values())[:3] == ("failed", 0, "no recipient address")
    assert tuple(failed[unusable].values())[:3] == ("failed", 1, "recipient address not usable in RCPT TO")
    recipients = {
        await notifications_db.fetchval("SELECT recipient_id FROM deliveries WHERE id = $1", d): d for d in failed
    }
    published = await wait_for_records(
        NOTIFICATIONS_DELIVERIES, lambda r: r.key.decode() in recipients and b"NotificationFailed" in r.value, count=2
    )
    assert sorted(Envelope.from_bytes(r.value).data["delivery_id"] for r in published) == sorted(failed)
    await asyncio.sleep(3)  # several of the worker's polls: a failed delivery is not tried again
    assert {d: await row(notifications_db, d) for d in failed} == failed


async def test_erasing_a_member_cancels_the_delivery_a_sender_holds_for_them(notifications_db):
    member_id = str(uuid.uuid4())
    held = await queue(notifications_db, unique_email("erased-while-held"), kind="rsvp_confirmation",
                       recipient_id=member_id)
    # A sender has claimed it (the lease a batch holds while it is sent, or left by a sender that failed).
    await notifications_db.execute(
        "UPDATE deliveries SET status = 'sending', lease_until = now() + interval '5 minutes' WHERE id = $1", held
    )
    async with EnvelopePublisher() as publisher:
        await publisher.publish(MemberErased(member_id=member_id, erased_at=datetime.now(UTC)))

    erased = await poll(lambda: notifications_db.fetchrow(
        "SELECT status, lease_until FROM deliveries WHERE id = $1 AND recipient_email IS NULL", held
    ), timeout=60)
    # Not left 'sending' without its address, to come back to a sender when the lease runs out.
    assert (erased["status"], erased["lease_until"]) == ("suppressed", None)


# A worker in this process, faults injected into it --------------------------------------------------------


@pytest.fixture(scope="module")
def unsendable_db_url() -> str:
    return fresh_test_database("notifications", TEST_DB, SERVICE_DIR)


@pytest.fixture
async def db(unsendable_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(unsendable_db_url))
    for table in ("deliveries", "outbox", "address_health"):  # each test sees only its own
        await conn.execute(f"DELETE FROM {table}")
    yield conn
    await conn.close()


@pytest.fixture
async def worker(unsendable_db_url: str) -> AsyncIterator[DeliveryWorker]:
    settings = Settings(
        service_name="notifications",
        instance="unsendable-test",
        database_url=unsendable_db_url,
        smtp_host="127.0.0.1",
        smtp_port=launcher.SMTP_CATCHER_SMTP_PORT,
        secret_key="notifications-unsendable-test-secret-0123",
        log_json=False,
        log_level="WARNING",
    )
    database = Database(unsendable_db_url, pool_size=2)
    yield DeliveryWorker(database, Outbox(tables.delivery.outbox), settings, asyncio.Event(), max_attempts=2)
    await database.dispose()


@pytest.fixture
async def mailer(worker: DeliveryWorker) -> AsyncIterator[Mailer]:
    m = Mailer(worker.settings)
    yield m
    await m.close()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-command-a-time"])
async def test_an_error_between_mail_and_data_costs_only_its_own_delivery(
    db, worker, mailer, mail, monkeypatch, pipelining
):
    real_rcpt = aiosmtplib.SMTP.rcpt
    real_pipelined = Mailer._pipelined

    async def rcpt(smtp: aiosmtplib.SMTP, recipient: str, *args: object, **kwargs: object) -> object:
        if recipient.startswith("explodes-"):
            raise RuntimeError("injected after MAIL FROM, before DATA")
        return await real_rcpt(smtp, recipient, *args, **kwargs)

    async def pipelined(self: Mailer, smtp: aiosmtplib.SMTP, sender: str, recipient: str) -> object:
        replies = await real_pipelined(self, smtp, sender, recipient)
        if recipient.startswith("explodes-"):
            raise RuntimeError("injected after the relay's go-ahead to DATA, before the message")
        return replies

    mailer.pipelining = pipelining
    monkeypatch.setattr(aiosmtplib.SMTP, "rcpt", rcpt)
    monkeypatch.setattr(Mailer, "_pipelined", pipelined)
    bad = [unique_email("explodes"), unique_email("explodes")]
    ordinary = [unique_email("after-explosion") for _ in range(5)]
    bad_ids = [await queue(db, bad[0], seconds_ago=60)]
    ids = [await queue(db, email, seconds_ago=50 - i) for i, email in enumerate(ordinary[:2])]
    bad_ids.append(await queue(db, bad[1], seconds_ago=45))
    ids += [await queue(db, email, seconds_ago=40 - i) for i, email in enumerate(ordinary[2:])]

    assert await worker.send_due(mailer) == 7  # one sender, one connection, one batch
    await delivered_once_each(mail, ordinary)
    assert {(await row(db, i))["status"] for i in ids} == {"sent"}
    for d in bad_ids:
        first = await row(db, d)
        assert (first["status"], first["attempts"]) == ("pending", 1)
        assert first["last_error"] == "unexpected error while sending (RuntimeError)"

    await asyncio.sleep(2.5)  # the backoff after a first attempt
    assert await worker.send_due(mailer) == 2
    assert {(r["status"], r["attempts"]) for r in [await row(db, d) for d in bad_ids]} == {("failed", 2)}
    assert await worker.send_due(mailer) == 0  # not tried forever
    assert [await mail.messages(address) for address in bad] == [[], []]


async def test_deliveries_that_cannot_be_sent_are_failed_before_smtp_with_their_reason(db, worker, mailer, mail):
    async def broken_calendar(session: object, delivery: object) -> list[tuple[str, str, bytes]]:
        raise ValueError("the meeting's calendar cannot be built")

    worker.attach_for("rsvp_confirmation", broken_calendar)
    cannot_prepare = unique_email("no-calendar")
    bad = {
        await queue(db, None, seconds_ago=60): "no recipient address",
        await queue(db, f"{UNUSABLE}@example.org", seconds_ago=59): "recipient address not usable in RCPT TO",
        await queue(db, cannot_prepare, kind="rsvp_confirmation", seconds_ago=58):
            "the email could not be prepared (ValueError)",
    }
    ordinary = [unique_email("beside-unsendable") for _ in range(3)]
    ids = [await queue(db, email, seconds_ago=30 - i) for i, email in enumerate(ordinary)]

    await worker.send_due(mailer)
    await delivered_once_each(mail, ordinary)
    assert {(await row(db, i))["status"] for i in ids} == {"sent"}
    assert {d: ((r := await row(db, d))["status"], r["last_error"]) for d in bad} == {
        d: ("failed", reason) for d, reason in bad.items()
    }
    assert await mail.messages(cannot_prepare) == []
    failures = await db.fetch("SELECT payload FROM outbox WHERE event_type = 'NotificationFailed'")
    assert sorted(Envelope.from_bytes(bytes(f["payload"])).data["delivery_id"] for f in failures) == sorted(bad)
    assert await db.fetchval("SELECT count(*) FROM address_health") == 0  # none of it blamed on an address
    assert await worker.send_due(mailer) == 0


async def test_a_relay_out_of_step_with_our_connection_is_not_the_recipients_refusal(db, worker, mailer, mail):
    # The connection left inside a mail transaction, as the defect left it: the relay answers the next MAIL FROM
    # with "503 Error: nested MAIL command".
    await (await mailer._connection()).mail(mailer.sender)
    email = unique_email("out-of-step")
    delivery_id = await queue(db, email)

    assert await worker.send_due(mailer) == 1
    await delivered_once_each(mail, [email])
    sent = await row(db, delivery_id)
    assert (sent["status"], sent["attempts"], sent["last_error"]) == ("sent", 1, None)
    assert await db.fetchval("SELECT count(*) FROM address_health") == 0


async def test_a_delivery_cancelled_by_erasure_while_its_batch_is_sent_is_dropped_before_the_relay_accepts(
    db, worker, mailer, mail
):
    member_id = str(uuid.uuid4())
    in_flight, given_back = unique_email("erased-in-flight"), unique_email("erased-given-back")
    ids = [await queue(db, e, kind="rsvp_confirmation", recipient_id=member_id) for e in (in_flight, given_back)]
    batch = {claimed.recipient_email: claimed for claimed in await worker.claim(10)}
    assert set(batch) == {in_flight, given_back}

    uows = UnitsOfWork(worker.db, worker.outbox)
    service = NotificationService(uows, worker.settings)
    erased = MemberErased(member_id=member_id, erased_at=datetime.now(UTC))
    async with uows.begin() as uow:
        await service.member_erased(uow, Envelope.wrap(erased), erased)

    await worker.deliver(mailer, batch[in_flight])  # the sender reaches it with the address it claimed
    await worker._release([batch[given_back].id])  # the batch ran out of time: the rest is given back
    assert await worker.release_expired_leases() == 0
    assert await worker.claim(10) == []
    assert [((r := await row(db, d))["status"], r["recipient_email"]) for d in ids] == [("suppressed", None)] * 2
    await asyncio.sleep(2)
    assert [await mail.messages(email) for email in (in_flight, given_back)] == [[], []]


async def test_an_email_whose_record_could_not_commit_is_recorded_once_the_database_answers_and_not_sent_again(
    db, worker, mailer, mail, monkeypatch
):
    """PostgreSQL restarting in the moment between the relay's "250" and the record's COMMIT (seen in the suite's
    restart fault test: one welcome sent twice once the lease ran out): the sender knows the relay has the email."""
    email, after = unique_email("commit-lost"), unique_email("after-commit-lost")
    delivery_id = await queue(db, email, seconds_ago=10)
    later = await queue(db, after, seconds_ago=5)
    real_commit = RecordConnection.commit
    lost: list[str] = []

    async def commit(record: RecordConnection, begin_next: bool = False) -> None:
        if not lost and record.conn.is_in_transaction():
            staged = await record.conn.fetchval(
                "SELECT id FROM deliveries WHERE id = $1 AND status = 'sent'", delivery_id)
            if staged is not None:  # this email's record: its connection dies before the COMMIT
                await db.execute("SELECT pg_terminate_backend($1)", record.conn.get_server_pid())
                lost.append(delivery_id)
        await real_commit(record, begin_next)

    monkeypatch.setattr(RecordConnection, "commit", commit)
    # A connection killed under a COMMIT fails the pass as the database's error, whichever of asyncpg's errors the
    # next email's statements on it meet first (never the next email's own failure).
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)):
        await worker.send_due(mailer)
    monkeypatch.setattr(RecordConnection, "commit", real_commit)
    assert lost == [delivery_id]
    await mail.wait_for(email, timeout=30)
    assert (await row(db, delivery_id))["status"] == "sending"  # the relay has it; the database does not know yet

    # The batch's leases run out before the database is reached again: the reaper records the accepted email
    # first, so only the other one (its '.' never sent) is made due again.
    await db.execute("UPDATE deliveries SET lease_until = now() - interval '1 second' WHERE status = 'sending'")
    assert await worker.release_expired_leases() == 1
    recorded = await row(db, delivery_id)
    assert (recorded["status"], recorded["attempts"], recorded["lease_until"]) == ("sent", 1, None)
    events = await db.fetch("SELECT payload FROM outbox WHERE event_type = 'NotificationSent'")
    assert [Envelope.from_bytes(bytes(e["payload"])).data["delivery_id"] for e in events] == [delivery_id]

    assert await worker.send_due(mailer) == 1  # the other email, once
    await delivered_once_each(mail, [email, after])
    assert (await row(db, later))["status"] == "sent"
    assert await worker.send_due(mailer) == 0
