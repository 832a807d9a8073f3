"""A malformed message and a handler that always fails go to the dead-letter topic after the configured
retries, later messages on the partition keep flowing, and a replay after the fix handles them once."""

from __future__ import annotations

import asyncio
import uuid

from faststream.kafka import KafkaBroker
from sqlalchemy import text

from deploy.local import launcher
from shared import deadletters
from shared.config import Settings
from shared.consumer import DeadLetterPublisher, EventConsumer
from shared.events.catalog import MemberConfirmed, MemberLeft
from shared.events.envelope import Envelope
from shared.inbox import Inbox
from shared.outbox import Outbox
from shared.topics import dead_letter_topic
from shared.uow import UnitsOfWork
from tests.support.kafka import produce


async def _eventually(predicate, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.2)):
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


async def test_poison_and_malformed_messages_are_dead_lettered_then_replayed_once(scratch_db, scratch_topics):
    db, tables = scratch_db
    run = uuid.uuid4().hex[:8]
    topic, group = f"test.dlq.{run}", f"test-dlq-{run}"
    await scratch_topics(topic, partitions=1)
    await scratch_topics(dead_letter_topic(group), partitions=1)

    handled: list[str] = []
    attempts: dict[str, int] = {}
    broken = {"on": True}
    consumer = EventConsumer.for_group(group, (topic,))

    @consumer.on(MemberConfirmed)
    async def confirmed(uow, envelope, event) -> None:
        session = uow.session
        attempts[event.member_id] = attempts.get(event.member_id, 0) + 1
        if event.member_id == "poison" and broken["on"]:
            raise RuntimeError("the mail template is missing")
        await session.execute(text("SELECT 1"))  # the side effect shares the inbox's transaction
        handled.append(event.member_id)

    settings = Settings(service_name="test", consumer_max_retries=2, consumer_retry_backoff_s=0.05)
    broker = KafkaBroker(launcher.KAFKA_BOOTSTRAP)
    dlq = DeadLetterPublisher(launcher.KAFKA_BOOTSTRAP, "test-dlq")
    consumer.attach(broker, Inbox(db, tables.inbox), UnitsOfWork(db, Outbox(tables.outbox)), dlq, settings)

    def event(member: str) -> bytes:
        return Envelope.wrap(MemberConfirmed(member_id=member, confirmed_at="2026-11-21T10:00:00Z")).to_bytes()

    key = b"same-partition"
    malformed = b'{"type": "MemberConfirmed", "version": 1, "data": {"member_id": "fixed"'  # truncated JSON
    for value in (event("first"), malformed, event("poison"), event("after-1"), event("after-2")):
        await produce(topic, value, key=key)

    await broker.start()
    try:
        await _eventually(lambda: _true(handled == ["first", "after-1", "after-2"]))
        letters = []

        async def two_dead_letters() -> bool:
            letters[:] = await deadletters.read_dead_letters(group, launcher.KAFKA_BOOTSTRAP)
            return len(letters) == 2

        await _eventually(two_dead_letters)
        bad, poison = letters
        assert bad.headers["x-dlq-error-type"] in ("ValidationError", "JSONDecodeError")
        assert poison.headers["x-dlq-error-type"] == "RuntimeError"
        assert poison.headers["x-dlq-error-message"] == "the mail template is missing"
        assert poison.headers["x-dlq-original-topic"] == topic
        assert poison.headers["x-dlq-original-partition"] == "0"
        assert poison.headers["x-dlq-original-offset"] == "2"
        assert poison.headers["x-dlq-attempts"] == "3" and attempts["poison"] == 3  # 1 try + 2 retries

        # The fault is fixed: the handler works again, and the malformed message is corrected on replay.
        broken["on"] = False
        await deadletters.replay(group, [poison.offset], bootstrap=launcher.KAFKA_BOOTSTRAP)
        await deadletters.replay(group, [bad.offset], value=event("fixed"), bootstrap=launcher.KAFKA_BOOTSTRAP)
        await _eventually(lambda: _true(sorted(handled) == sorted(["first", "after-1", "after-2", "poison", "fixed"])))

        # Replaying again is harmless: the inbox has seen the event.
        await deadletters.replay(group, [poison.offset], bootstrap=launcher.KAFKA_BOOTSTRAP)
        await asyncio.sleep(2)
        assert handled.count("poison") == 1
    finally:
        await broker.stop()
        await dlq.stop()


async def test_a_replay_is_handled_only_by_the_group_it_was_meant_for(scratch_db, scratch_topics):
    db, tables = scratch_db
    run = uuid.uuid4().hex[:8]
    topic = f"test.replay.{run}"
    await scratch_topics(topic, partitions=1)
    seen: list[str] = []
    consumer = EventConsumer.for_group(f"other-{run}", (topic,))

    @consumer.on(MemberLeft)
    async def left(uow, envelope, event) -> None:
        seen.append(event.member_id)

    broker = KafkaBroker(launcher.KAFKA_BOOTSTRAP)
    dlq = DeadLetterPublisher(launcher.KAFKA_BOOTSTRAP, "test")
    consumer.attach(broker, Inbox(db, tables.inbox), UnitsOfWork(db, Outbox(tables.outbox)), dlq,
                    Settings(service_name="test"))
    value = Envelope.wrap(MemberLeft(member_id="replayed")).to_bytes()
    await produce(topic, value, key=b"k", headers=[("x-replay-for-group", b"some-other-group")])
    await produce(topic, Envelope.wrap(MemberLeft(member_id="normal")).to_bytes(), key=b"k")
    await broker.start()
    try:
        await _eventually(lambda: _true(seen == ["normal"]))
    finally:
        await broker.stop()


async def _true(value: bool) -> bool:
    return value
