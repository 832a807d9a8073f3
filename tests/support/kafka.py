"""Reading Kafka topics from tests, straight from the broker (no consumer group)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from deploy.local import launcher


async def read_topic(topic: str, *, timeout: float = 20.0) -> list[Any]:
    """Every record currently on `topic`, from the beginning to the end offsets seen at the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, enable_auto_commit=False)
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
        await asyncio.sleep(1.0)
    raise AssertionError(f"expected {count} matching record(s) on {topic}, found {len(found)}")


async def produce(topic: str, value: bytes | None, key: bytes | None = None, headers: list | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, headers=headers or [])
    finally:
        await producer.stop()
