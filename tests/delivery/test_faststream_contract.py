"""What shared/consumer.py relies on in FastStream, pinned against the real broker.

`EventConsumer` subscribes one handler per group on a plain `KafkaBroker` (run in FastAPI's lifespan) and, from
the message FastStream hands it, takes the aiokafka record (`raw_message`) and the aiokafka consumer
(`consumer`) to pull whatever the fetcher already holds with `getmany`; with `AckPolicy.ACK` the ack after the
handler commits the offsets of every record it pulled. A FastStream upgrade that changes any of this fails here.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage

from deploy.local import launcher
from shared.config import Settings
from shared.consumer import DeadLetterPublisher, EventConsumer
from shared.events.catalog import MemberLeft
from shared.events.envelope import Envelope
from shared.inbox import Inbox
from shared.outbox import Outbox
from shared.uow import UnitsOfWork
from tests.support.kafka import produce


def test_the_message_class_still_takes_the_consumer():
    assert "consumer" in inspect.signature(KafkaMessage.__init__).parameters


async def test_a_batch_pulled_with_getmany_is_handled_and_its_offsets_committed(scratch_db, scratch_topics):
    db, tables = scratch_db
    run = uuid.uuid4().hex[:8]
    topic, group = f"test.fs.{run}", f"test-fs-{run}"
    await scratch_topics(topic, partitions=1)
    total = 60
    for i in range(total):
        await produce(topic, Envelope.wrap(MemberLeft(member_id=f"m{i}")).to_bytes(), key=f"m{i}".encode())

    seen: list[str] = []
    batches: list[list[type]] = []
    consumer = EventConsumer.for_group(group, (topic,))
    original = consumer.handle_batch

    async def spy(records):  # what FastStream + getmany handed over: aiokafka records, several at once
        batches.append([type(r) for r in records])
        await original(records)

    consumer.handle_batch = spy  # type: ignore[method-assign]

    @consumer.on(MemberLeft)
    async def left(uow, envelope, event) -> None:
        seen.append(event.member_id)

    broker = KafkaBroker(launcher.KAFKA_BOOTSTRAP)
    dlq = DeadLetterPublisher(launcher.KAFKA_BOOTSTRAP, "test-fs")
    consumer.attach(broker, Inbox(db, tables.inbox), UnitsOfWork(db, Outbox(tables.outbox)), dlq,
                    Settings(service_name="test"))
    await broker.start()
    try:
        for _ in range(150):
            if len(seen) >= total:
                break
            await asyncio.sleep(0.2)
    finally:
        await broker.stop()
        await dlq.stop()

    assert sorted(seen) == sorted(f"m{i}" for i in range(total))
    assert all(t is ConsumerRecord for batch in batches for t in batch)
    assert max(len(b) for b in batches) > 1, batches  # getmany did add the records the fetcher held
    admin = AIOKafkaAdminClient(bootstrap_servers=launcher.KAFKA_BOOTSTRAP)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    assert sum(meta.offset for meta in committed.values()) == total  # the ack committed every pulled record
