"""Benchmark 3, catch-up: `python -m services.campaigns rebuild-reporting` over a history of events on the
reporting topics, in events per second.

The history is made once and kept: if the reporting topics hold fewer events than asked, the missing ones are
generated (bench/data.py event_history) and produced with one fast aiokafka producer while the services are
stopped; every consumer group is then moved to the end of those topics, as if the services had handled them long
ago, and the services are started again. So a second run reuses the history and measures only the rebuild.

Baseline, same run: a raw aiokafka consumer reading the same topics from the beginning to the same end offsets.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import data
from bench.common import REPO_ROOT, BenchOutcome, Result, launcher, say, service_env

REPORTING_TOPICS = ("membership.members", "membership.organisation", "events.meetings", "events.rsvps",
                    "campaigns.campaigns", "campaigns.actions", "campaigns.engagement")


async def partitions(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(t, p) for t in REPORTING_TOPICS for p in sorted(cluster.partitions_for_topic(t) or set())]


async def history_size() -> tuple[int, dict[TopicPartition, int]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await partitions(consumer)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps), ends
    finally:
        await consumer.stop()


async def skip_groups_to_end(groups: tuple[str, ...]) -> None:
    """Commit the end offsets of the reporting topics for each (stopped) consumer group."""
    _, ends = await history_size()
    for group in groups:
        consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(list(ends))
            await consumer.commit({tp: offset for tp, offset in ends.items()})
        finally:
            await consumer.stop()


async def ensure_history(events: int) -> int:
    """Make the reporting topics hold at least `events` events; return how many were produced now."""
    from shared.topics import CONSUMER_GROUPS

    have, _ = await history_size()
    missing = events - have
    if missing <= 0:
        return 0
    say(f"catch-up: the topics hold {have:,} events; producing {missing:,} more (services stopped meanwhile)")
    services = [s for s in launcher.SERVICES if launcher.read_record(s) is not None]
    for name in services:
        launcher.stop_service(name)
    try:
        started = time.monotonic()
        sent = await data.produce(launcher.KAFKA_BOOTSTRAP, data.event_history(missing, seed=have + 1))
        say(f"catch-up: produced {sent:,} events in {time.monotonic() - started:.0f} s; moving consumer groups on")
        await skip_groups_to_end(CONSUMER_GROUPS)
    finally:
        launcher.migrate_services(services)  # the code may have moved on since the stack started
        for name in services:
            launcher.start_service(name)
        for name in services:
            launcher.service_ready(name, 90)
    return missing


async def raw_read() -> tuple[int, float]:
    """(records, seconds) for a plain aiokafka consumer reading every reporting partition to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, enable_auto_commit=False,
                                max_poll_records=1000)
    await consumer.start()
    try:
        tps = await partitions(consumer)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        started = time.monotonic()
        await consumer.seek_to_beginning(*tps)
        count = 0
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=1000)
            for records in batch.values():
                count += len(records)
            # The position, not the last record's offset: a partition may end with records a consumer never
            # sees (the idempotent producer's control records), and the read would then wait for ever.
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return count, time.monotonic() - started
    finally:
        await consumer.stop()


def rebuild(workdir: Path, profile: bool = False) -> tuple[int, float, str]:
    """Run the operator command; (records read, seconds, its output)."""
    command = [sys.executable, "-m", "services.campaigns", "rebuild-reporting"]
    if profile:
        command = [sys.executable, "-m", "pyinstrument", "--renderer", "text", "--outfile",
                   str(workdir / "rebuild-profile.txt"), "-m", "services.campaigns", "rebuild-reporting"]
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO_ROOT, env=service_env("campaigns"), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"rebuild-reporting failed ({done.returncode}):\n{output[-3000:]}")
    match = re.search(r"read (\d+) records", output)
    return (int(match.group(1)) if match else 0), seconds, output


async def run(quick: bool, workdir: Path, profile: bool = False) -> BenchOutcome:
    events = 100_000 if quick else 1_000_000
    out = BenchOutcome("Catch-up (reporting rebuild)", sizes={"events": f"{events:,}"})
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    produced = await ensure_history(events)
    total, _ = await history_size()
    out.sizes["events on the reporting topics"] = f"{total:,}"
    if produced:
        out.notes.append(f"{produced:,} events generated and produced first")
    say(f"catch-up: raw aiokafka read of {total:,} events")
    raw_records, raw_seconds = await raw_read()
    # Seen right after a service restart: a read that finds no partitions reads nothing, and the ratio is then
    # meaningless. (A partition may hold offsets no consumer sees, hence the 1 % allowance.)
    for _ in range(2):
        if raw_records >= 0.99 * total:
            break
        say(f"catch-up: the raw read got {raw_records:,} of {total:,} events; reading again")
        raw_records, raw_seconds = await raw_read()
    if raw_records < 0.99 * total:
        raise RuntimeError(f"the raw baseline read {raw_records:,} of the {total:,} events on the topics")
    say("catch-up: rebuild-reporting")
    records, seconds, _ = await asyncio.to_thread(rebuild, workdir, profile)
    out.notes.append(f"rebuild read {records:,} records in {seconds:.1f} s (the command's whole run, start-up and "
                     f"swap included); raw read {raw_records:,} in {raw_seconds:.1f} s")
    raw_rate = raw_records / raw_seconds
    rate = records / seconds
    out.add(Result("reporting rebuild", rate, "events/s", "raw aiokafka consumer, same topics", raw_rate,
                   target=">= 1/2 of the raw rate", met=rate >= raw_rate / 2))
    return out
