"""Kafka from tests: reading topics straight from the broker (no consumer group), watching a service's topics
from the start of a session, publishing events as a service's relay does, and new consumer groups that start
at the end of their topics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Self

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from deploy.local import launcher
from shared.events.envelope import Envelope, EventData


async def read_topic(topic: str, *, timeout: float = 20.0, bootstrap: str | None = None) -> list[Any]:
    """Every record currently on `topic` (of the suite's Kafka, or of `bootstrap`), from the beginning to the end
    offsets seen at the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap or launcher.KAFKA_BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()  # topics() does not keep what it learns
        partitions = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or set())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in partitions]
            if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp_records in batch.values():
                records.extend(tp_records)
        return records
    finally:
        await consumer.stop()


async def wait_for_records(
    topic: str, predicate: Callable[[Any], bool], count: int, *, timeout: float = 60.0
) -> list[Any]:
    deadline = time.monotonic() + timeout
    found: list[Any] = []
    while time.monotonic() < deadline:
        found = [r for r in await read_topic(topic) if predicate(r)]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.25)
    raise AssertionError(f"expected {count} matching record(s) on {topic}, found {len(found)}")


async def produce(topic: str, value: bytes | None, key: bytes | None = None, headers: list | None = None) -> Any:
    """Publish one record; its metadata (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        return await producer.send_and_wait(topic, value=value, key=key, headers=headers or [])
    finally:
        await producer.stop()


async def wait_until_group_passes(group: str, topic: str, partition: int, offset: int, timeout: float = 60.0) -> None:
    """Wait until consumer group `group` has committed past `offset` on the partition: it handled that record (the
    services commit an offset only once its message was handled or dead-lettered, shared/consumer.py)."""
    tp = TopicPartition(topic, partition)
    admin = AIOKafkaAdminClient(bootstrap_servers=launcher.KAFKA_BOOTSTRAP)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            committed = (await admin.list_consumer_group_offsets(group, partitions=[tp])).get(tp)
            if committed is not None and committed.offset > offset:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{group} did not get past offset {offset} of {topic}[{partition}]: {committed}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def group_starts_at_the_end(group: str, topic_names: tuple[str, ...]) -> None:
    """Commit the current end offsets for a new consumer group, so it skips the topics' history."""
    consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in topic_names for p in sorted(await consumer._client._wait_on_metadata(t))]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.commit(dict(ends.items()))
    finally:
        await consumer.stop()


class EnvelopePublisher:
    """Publishes events as a service's relay does: the envelope as value, the subject as key, the type as a
    header."""

    def __init__(self) -> None:
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=launcher.KAFKA_BOOTSTRAP, acks="all", enable_idempotence=True
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(self, event: EventData, *, occurred_at: datetime | None = None) -> Envelope:
        assert self._producer is not None
        envelope = Envelope.wrap(event, occurred_at=occurred_at)
        await self._producer.send_and_wait(
            event.topic,
            value=envelope.to_bytes(),
            key=envelope.subject_id.encode(),
            headers=[("type", envelope.type.encode())],
        )
        return envelope


class KafkaWatcher:
    """Collects every record on `watched` topics from the moment `start()` returns."""

    def __init__(self, watched: tuple[str, ...]) -> None:
        self.watched = watched
        self.records: list[Any] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._new = asyncio.Event()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, enable_auto_commit=False)
        await consumer.start()
        parts = [
            TopicPartition(t, p)
            for t in self.watched
            for p in sorted(await consumer._client._wait_on_metadata(t))  # the topic's partitions, fetched
        ]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:
            await consumer.position(tp)  # fix the start now, before any test produces
        self._consumer = consumer
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for recs in batch.values():
                self.records.extend(recs)
            if batch:
                self._new.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()

    def envelopes(self, predicate: Callable[[Envelope], bool] = lambda e: True) -> list[Envelope]:
        return [e for r in self.records if r.value is not None and predicate(e := Envelope.from_bytes(r.value))]

    def keyed(self, predicate: Callable[[Envelope], bool]) -> list[tuple[str, Envelope]]:
        """(Kafka key, envelope) of the matching records."""
        return [(r.key.decode(), e) for r in self.records
                if r.value is not None and predicate(e := Envelope.from_bytes(r.value))]

    def tombstones(self, topic: str) -> list[str]:
        return [r.key.decode() for r in self.records if r.value is None and r.topic == topic]

    async def wait_for(self, predicate: Callable[[Envelope], bool], count: int = 1,
                       timeout: float = 30.0, ours: asyncpg.Connection | None = None) -> list[Envelope]:
        """At least `count` envelopes matching, within `timeout` seconds.

        With `ours` (the test database), only events the test's server published (found in its outbox) count:
        the running system's own service may publish events about the same test subjects too.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.envelopes(predicate)
            if ours is not None and found:
                mine = {r[0] for r in await ours.fetch("SELECT event_id FROM outbox WHERE event_id = ANY($1::uuid[])",
                                                       [e.event_id for e in found])}
                found = [e for e in found if e.event_id in mine]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected {count} matching event(s) on Kafka, found {len(found)}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), timeout=min(remaining, 1.0))
            except TimeoutError:
                pass

    async def settle(self, predicate: Callable[[Envelope], bool], seconds: float = 2.0) -> list[Envelope]:
        """Envelopes matching after the relay had time to publish anything more (to prove there was none)."""
        await asyncio.sleep(seconds)
        return self.envelopes(predicate)

    async def wait_for_tombstone(self, topic: str, key: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while key not in self.tombstones(topic):
            if time.monotonic() > deadline:
                raise AssertionError(f"no tombstone for {key} on {topic}")
            await asyncio.sleep(0.2)
