"""Benchmark 2, join to welcome email: at a steady rate of joins through the gateway (200/s in the issue), the time
from each HTTP response to the SMTP catcher's receipt of that person's welcome email (its `received_at`).

Baseline, same run: Kafka's own produce-to-consume latency for messages of a MemberJoined envelope's size, at the
same rate, with an aiokafka producer (acks=all, idempotent, as the outbox relay sends) and consumer on a topic of
the benchmark's own that is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
import uuid
from pathlib import Path

from bench import data, load
from bench.common import BenchOutcome, MailIndexReader, Result, launcher, percentile, say

RATE = 200.0
ENVELOPE_BYTES = 1150  # a MemberJoined envelope with its sealed email, name and postcode


async def wait_for_welcomes(reader: MailIndexReader, wanted: dict[str, float], timeout: float) -> dict[str, float]:
    """received_at of the first mail to each wanted address, waiting up to `timeout` seconds for the last."""
    got: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(wanted) and time.monotonic() < deadline:
        for row in reader.read_new():
            for rcpt in row.get("rcpt_tos", []):
                rcpt = rcpt.lower()
                if rcpt in wanted and rcpt not in got:
                    got[rcpt] = float(row["received_at"])
        await asyncio.sleep(0.5)
    return got


async def kafka_latency(rate: float, seconds: float, size: int) -> list[float]:
    """Produce-to-consume latency in ms of `rate` messages a second of `size` bytes for `seconds`."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bench.latency.{uuid.uuid4().hex[:8]}"
    bootstrap = launcher.KAFKA_BOOTSTRAP
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-{topic}",
                                auto_offset_reset="earliest", fetch_max_wait_ms=500)
    total = int(rate * seconds)
    latencies: list[float] = []
    try:
        await producer.start()
        await consumer.start()
        while not consumer.assignment():
            await asyncio.sleep(0.1)

        async def consume() -> None:
            while len(latencies) < total:
                batch = await consumer.getmany(timeout_ms=1000)
                now = time.time()
                for records in batch.values():
                    for record in records:
                        latencies.append((now - struct.unpack("d", record.value[:8])[0]) * 1000)

        reader = asyncio.create_task(consume())
        padding = os.urandom(size - 8)
        t0 = time.monotonic()
        for i in range(total):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(topic, struct.pack("d", time.time()) + padding, key=str(uuid.uuid4()).encode())
        await asyncio.wait_for(reader, timeout=60)
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()
    return latencies


async def measure(out: BenchOutcome, rate: float, seconds: float, *, targets: bool) -> None:
    tag = data.run_tag()
    reader = MailIndexReader()
    say(f"latency: {rate:.0f} joins/s through the gateway for {seconds:.0f} s")
    result = await load.open_loop(launcher.GATEWAY_URL, data.join_request(tag), rate=rate, seconds=seconds)
    answered = {data.member_email(tag, i): t for i, t, s in zip(result.indexes, result.answered, result.statuses,
                                                                 strict=True) if s == 303}
    achieved = result.ok(303) / result.seconds if result.seconds else 0.0
    say(f"latency: {len(answered)} joins accepted ({achieved:.0f}/s achieved); waiting for their welcome emails")
    received = await wait_for_welcomes(reader, answered, timeout=max(120.0, seconds * 8))
    latencies = [(received[e] - answered[e]) * 1000 for e in received]
    missing = len(answered) - len(received)
    http = result.latencies_ms()
    out.notes.append(f"at {rate:.0f}/s: {len(answered)} joins accepted of {int(rate * seconds)} sent "
                     f"({achieved:.0f}/s achieved, {result.errors} errors), HTTP response p50 "
                     f"{percentile(http, 50):.0f} ms / p99 {percentile(http, 99):.0f} ms; {len(received)} welcome "
                     "emails caught" + (f", {missing} not within the wait" if missing else ""))
    if not latencies:
        raise RuntimeError("no welcome email reached the catcher: is the notifications service sending? "
                           f"(see {launcher.log_path('notifications')})")
    say(f"latency: Kafka produce-to-consume baseline at {rate:.0f}/s")
    kafka = await kafka_latency(rate, seconds, ENVELOPE_BYTES)
    for p, target in ((50, 50.0), (95, None), (99, 250.0)):
        value = percentile(latencies, p)
        out.add(Result(f"join to welcome email p{p} at {rate:.0f} joins/s", value, "ms",
                       f"Kafka produce-to-consume p{p}", percentile(kafka, p), "ms",
                       target=f"<= {target:.0f} ms" if target and targets else "",
                       met=(value <= target and not missing) if target and targets else None,
                       higher_is_better=False))


async def run(quick: bool, workdir: Path, rate: float = RATE, gentle_rate: float = 10.0) -> BenchOutcome:
    """At the issue's rate, then (for comparison) at a rate this machine's join ingest sustains."""
    seconds = 10.0 if quick else 15.0
    out = BenchOutcome("Join to welcome email", sizes={"rates": f"{rate:.0f} and {gentle_rate:.0f} joins/s",
                                                       "seconds": seconds})
    await measure(out, rate, seconds, targets=True)
    await measure(out, gentle_rate, seconds * 2, targets=False)
    return out
