"""A database outage is waited out, never dead-lettered: only a bad event uses up the bounded retries.

Seen in a loaded `make test`: while PostgreSQL restarted, each consumer's three quick retries ran out in about
1.5 s and the welcome of a member who had just joined went to the dead letters, so it was never sent.
"""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from shared.config import Settings
from shared.consumer import EventConsumer, is_outage
from shared.events.catalog import MemberLeft
from shared.events.envelope import Envelope
from shared.inbox import Inbox
from shared.outbox import Outbox
from shared.uow import UnitsOfWork


def _wrapped(orig: BaseException) -> DBAPIError:
    return DBAPIError("SELECT 1", {}, orig)


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    TimeoutError(),
    _wrapped(asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")),
    _wrapped(asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")),
    OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "Connection refused")),
], ids=repr)
def test_database_and_network_failures_are_outages(exc):
    assert is_outage(exc)


@pytest.mark.parametrize("exc", [
    RuntimeError("the mail template is missing"),
    KeyError("member_id"),
    _wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key")),
    _wrapped(asyncpg.exceptions.NotNullViolationError("null value in column")),
], ids=repr)
def test_failures_of_the_event_itself_are_not_outages(exc):
    assert not is_outage(exc)


class _Record:
    def __init__(self, value: bytes) -> None:
        self.value, self.key, self.headers = value, b"m1", []
        self.topic, self.partition, self.offset = "test.outage", 0, 7


class _DeadLetters:
    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, group, record, exc, attempts) -> None:
        self.published.append(repr(exc))


async def test_an_outage_longer_than_the_retries_is_waited_out_and_the_event_handled_once(scratch_db):
    db, tables = scratch_db
    consumer = EventConsumer.for_group("test-outage", ("test.outage",))
    failures = {"left": 8}  # far more than consumer_max_retries
    handled: list[str] = []

    @consumer.on(MemberLeft)
    async def left(uow, envelope, event) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise _wrapped(asyncpg.exceptions.CannotConnectNowError("the database system is starting up"))
        handled.append(event.member_id)

    dlq = _DeadLetters()
    settings = Settings(service_name="test", consumer_max_retries=2, consumer_retry_backoff_s=0.01,
                        consumer_retry_backoff_max_s=0.02)
    consumer.attach(_NoBroker(), Inbox(db, tables.inbox), UnitsOfWork(db, Outbox(tables.outbox)), dlq,
                    settings)  # type: ignore[arg-type]
    await consumer.handle_record(_Record(Envelope.wrap(MemberLeft(member_id="m1")).to_bytes()))

    assert handled == ["m1"] and dlq.published == []


async def test_a_bad_event_still_goes_to_the_dead_letters_after_its_retries(scratch_db):
    db, tables = scratch_db
    consumer = EventConsumer.for_group("test-poison", ("test.outage",))
    attempts = {"n": 0}

    @consumer.on(MemberLeft)
    async def left(uow, envelope, event) -> None:
        attempts["n"] += 1
        raise RuntimeError("the mail template is missing")

    dlq = _DeadLetters()
    settings = Settings(service_name="test", consumer_max_retries=2, consumer_retry_backoff_s=0.01)
    consumer.attach(_NoBroker(), Inbox(db, tables.inbox), UnitsOfWork(db, Outbox(tables.outbox)), dlq,
                    settings)  # type: ignore[arg-type]
    await consumer.handle_record(_Record(Envelope.wrap(MemberLeft(member_id="m2")).to_bytes()))

    assert attempts["n"] == 3 and dlq.published == ["RuntimeError('the mail template is missing')"]


class _NoBroker:
    """`attach` subscribes on a broker; these tests hand records to the consumer themselves."""

    def subscriber(self, *args, **kwargs):
        return lambda fn: fn
