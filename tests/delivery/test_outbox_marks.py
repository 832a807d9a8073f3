"""A relay marks each outbox row published as soon as Kafka acknowledges its own send, not when the slowest send of
its pass comes back: a relay that dies while one partition fails over leaves pending only what Kafka had not
acknowledged (and that alone is sent again: topics are at least once, docs/decisions/0010-outbox-at-least-once.md).
Each key keeps its order: a row is never marked before an earlier row of its key, nor after one of them failed."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError
from sqlalchemy import text

from shared.events.catalog import MemberConfirmed
from shared.events.envelope import Envelope
from shared.outbox import Outbox, OutboxRelay


class HeldProducer:
    """Stands in for Kafka: every send waits until the test acknowledges or fails it."""

    def __init__(self) -> None:
        self.sent: dict[str, list[asyncio.Future]] = {}

    async def send(self, topic: str, *, value: bytes | None, key: bytes, headers: Any) -> asyncio.Future:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.sent.setdefault(key.decode(), []).append(future)
        return future

    async def stop(self) -> None:
        pass


async def published(db, key: str) -> list[bool]:
    async with db.transaction() as session:
        rows = await session.execute(text("SELECT published_at IS NOT NULL FROM outbox WHERE key = :k ORDER BY id"),
                                     {"k": key})
        return [r[0] for r in rows]


async def until(check, expected, timeout: float = 30.0):
    for _ in range(int(timeout / 0.05)):
        if (value := await check()) == expected:
            return value
        await asyncio.sleep(0.05)
    return await check()


async def test_an_acknowledged_row_is_marked_while_other_sends_of_its_pass_still_wait(scratch_db):
    db, tables = scratch_db
    outbox = Outbox(tables.outbox)
    async with db.transaction() as session:
        for key in ("fast", "slow", "slow", "broken", "broken"):
            env = Envelope.wrap(MemberConfirmed(member_id=key, confirmed_at="2026-11-21T10:00:00Z"))
            await outbox.add(session, env, topic="test.marks")
    relay = OutboxRelay(db, "unused:9092", "marks")
    producer = HeldProducer()
    relay._producer = producer  # type: ignore[assignment]
    try:
        passing = asyncio.create_task(relay.publish_batch())
        await until(lambda: asyncio.sleep(0, result=sum(map(len, producer.sent.values()))), 5)

        producer.sent["fast"][0].set_result(None)
        assert await until(lambda: published(db, "fast"), [True]) == [True]
        producer.sent["slow"][1].set_result(None)  # the later row of its key first: it must wait for the earlier
        await asyncio.sleep(0.5)
        assert await published(db, "slow") == [False, False]
        assert not passing.done()

        producer.sent["slow"][0].set_result(None)
        assert await until(lambda: published(db, "slow"), [True, True]) == [True, True]
        producer.sent["broken"][1].set_result(None)
        producer.sent["broken"][0].set_exception(KafkaTimeoutError())
        try:
            await passing
        except KafkaTimeoutError:
            pass
        else:
            raise AssertionError("a failed send should fail the pass (the relay retries it)")
        assert await published(db, "broken") == [False, False]  # the failed row and every later row of its key
    finally:
        await relay.stop()
    assert relay.published_total == 3
