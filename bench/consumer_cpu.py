"""CPU per consumed event (campaigns' and events' consumers) and per published event (an outbox relay), and the
relay's latency from commit to Kafka. Not one of bench/run.py's benchmarks: a tool for the delivery machinery.

    GROUNDSWELL_PORT_OFFSET=8000 GROUNDSWELL_STATE_DIR=$PWD/.run/h3 .venv/bin/python bench/consumer_cpu.py consume
    ... bench/consumer_cpu.py consume --events 4000 --rate 200     # MemberJoined straight onto membership.members
    ... bench/consumer_cpu.py joins --seconds 20                    # real joins through the gateway
    ... bench/consumer_cpu.py relay --events 4000 --rate 200        # a relay process on a scratch database
    RELAY_CODE_ROOT=/tmp/old ... bench/consumer_cpu.py relay        # the relay of another checkout's shared/

`consume` and `joins` read each service's CPU (utime + stime of /proc/<pid>/stat) from before the load until
every consumer group named has committed the topic's end, minus what the process spends idle over as long
(measured first). `relay` runs one OutboxRelay in a process of its own against a scratch database, inserts
outbox rows the way a join does (two per transaction, ~1,150-byte payloads) at a steady rate, and reads them
back from a scratch topic: CPU of the relay process per published row, and commit -> consumer-received latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import asyncpg_dsn, launcher, percentile, service_pid  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
GROUPS = {"campaigns": ("campaigns.engagement", "campaigns.reporting"), "events": ("events.members",)}


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def cpus(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_s(pid) for name, pid in pids.items()}


def member_joined(i: int, tag: str) -> tuple[bytes, bytes]:
    mid = str(uuid.uuid4())
    now = datetime.now(UTC).isoformat()
    sealed = {"key_owner": "membership", "key_id": mid, "nonce": "AAAAAAAAAAAAAAAA",
              "ciphertext": "c2VhbGVkLWluLWEtYmVuY2htYXJrLW5vdC1yZWFkYWJsZQ=="}
    data = {"member_id": mid, "email": sealed, "name": sealed, "postcode": sealed, "region_id": "region-bench",
            "group_ids": ["group-bench"], "suggested_group_id": "group-bench", "subteam_ids": [], "interests": [],
            "engagement_level": "informed", "organisation_id": None, "email_consent": True,
            "consent_wording_version": "email-2026-11", "source": "join-form", "confirmation_required": True,
            "joined_at": now}
    env = {"event_id": str(uuid.uuid4()), "type": "MemberJoined", "version": 1, "occurred_at": now,
           "source": "membership", "correlation_id": f"bench-{tag}-{i}", "causation_id": None, "subject_id": mid,
           "data": data}
    return mid.encode(), json.dumps(env, separators=(",", ":")).encode()


async def caught_up(groups: list[str], topics: list[str]) -> bool:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=launcher.KAFKA_BOOTSTRAP)
    probe = AIOKafkaConsumer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, enable_auto_commit=False)
    await admin.start()
    await probe.start()
    try:
        cluster = await probe._client.fetch_all_metadata()
        tps = [TopicPartition(t, p) for t in topics for p in cluster.partitions_for_topic(t) or set()]
        ends = await probe.end_offsets(tps)
        for group in groups:
            committed = await admin.list_consumer_group_offsets(group)
            for tp in tps:
                meta = committed.get(tp)
                if ends[tp] > 0 and (meta is None or meta.offset < ends[tp]):
                    return False
        return True
    finally:
        await probe.stop()
        await admin.close()


async def idle_rates(pids: dict[str, int], seconds: float) -> dict[str, float]:
    c0, t0 = cpus(pids), time.monotonic()
    await asyncio.sleep(seconds)
    c1, t1 = cpus(pids), time.monotonic()
    return {n: (c1[n] - c0[n]) / (t1 - t0) for n in pids}


def report(what: str, n: int, pids: dict[str, int], c0: dict[str, float], c1: dict[str, float], wall: float,
           idle: dict[str, float]) -> None:
    for name in pids:
        used = c1[name] - c0[name]
        net = used - idle[name] * wall
        print(f"{name:10s} {what}: {1000 * net / n:6.2f} ms CPU per event (raw {1000 * used / n:.2f}, "
              f"idle {1000 * idle[name]:.1f} ms/s over {wall:.1f} s, {n} events)")


async def consume(args: argparse.Namespace) -> None:
    from aiokafka import AIOKafkaProducer

    names = args.services.split(",")
    pids = {n: service_pid(n) for n in names}
    assert all(pids.values()), pids
    groups = [g for n in names for g in GROUPS[n]]
    topic = "membership.members"
    assert await caught_up(groups, [topic]), "the consumer groups have a backlog already"
    idle = await idle_rates(pids, args.idle)  # type: ignore[arg-type]
    producer = AIOKafkaProducer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, acks="all", linger_ms=1)
    await producer.start()
    tag = uuid.uuid4().hex[:6]
    records = [member_joined(i, tag) for i in range(args.events)]
    c0, t0 = cpus(pids), time.monotonic()  # type: ignore[arg-type]
    try:
        if args.rate <= 0:  # a backlog: everything at once
            futs = [await producer.send(topic, value=v, key=k) for k, v in records]
            await asyncio.gather(*futs)
        else:
            start = time.monotonic()
            for i, (k, v) in enumerate(records):
                due = start + i / args.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await producer.send(topic, value=v, key=k)
            await producer.flush()
    finally:
        await producer.stop()
    sent = time.monotonic()
    while not await caught_up(groups, [topic]):
        await asyncio.sleep(0.25)
    c1, t1 = cpus(pids), time.monotonic()  # type: ignore[arg-type]
    print(f"{args.events} MemberJoined at {args.rate or 'once'}/s: produced in {sent - t0:.1f} s, "
          f"consumed by {t1 - t0:.1f} s")
    report("consume", args.events, pids, c0, c1, t1 - t0, idle)  # type: ignore[arg-type]


async def joins(args: argparse.Namespace) -> None:
    from bench import data, load

    names = args.services.split(",")
    pids = {n: service_pid(n) for n in names}
    groups = [g for n in names if n in GROUPS for g in GROUPS[n]]
    topic = "membership.members"
    idle = await idle_rates(pids, args.idle)  # type: ignore[arg-type]
    c0, t0 = cpus(pids), time.monotonic()  # type: ignore[arg-type]
    res = await load.closed_loop(launcher.GATEWAY_URL, data.join_request(data.run_tag()),
                                 concurrency=args.concurrency, seconds=args.seconds)
    n = res.ok(303)
    while not await caught_up(groups, [topic]):
        await asyncio.sleep(0.25)
    c1, t1 = cpus(pids), time.monotonic()  # type: ignore[arg-type]
    print(f"{n} joins in {args.seconds} s ({n / args.seconds:.1f}/s), caught up after {t1 - t0:.1f} s")
    report("per join", n, pids, c0, c1, t1 - t0, idle)  # type: ignore[arg-type]


# The relay ------------------------------------------------------------------------------------------------
async def relay_worker(url: str, bootstrap: str) -> None:
    """A process running one OutboxRelay until stdin closes."""
    from shared.db import Database
    from shared.outbox import OutboxRelay

    db = Database(url, pool_size=4)
    relay = OutboxRelay(db, bootstrap, "bench")
    await relay.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await relay.stop()
    await db.dispose()


async def relay(args: argparse.Namespace) -> None:
    import asyncpg
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from sqlalchemy import MetaData

    from shared.db import Database
    from shared.outbox import NOTIFY_TRIGGER_SQL, OUTBOX_SHARDS
    from shared.runtime import DeliveryTables

    run = uuid.uuid4().hex[:8]
    name, topic = f"gs_relaybench_{run}", f"bench.relay.{run}"
    admin_pg = await asyncpg.connect(asyncpg_dsn("membership"))
    await admin_pg.execute(f'CREATE DATABASE "{name}"')
    url = launcher.database_url("membership").rsplit("/", 1)[0] + f"/{name}"
    kadmin = AIOKafkaAdminClient(bootstrap_servers=launcher.KAFKA_BOOTSTRAP)
    await kadmin.start()
    await kadmin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
    worker = None
    try:
        db = Database(url, pool_size=2)
        metadata = MetaData()
        DeliveryTables(metadata)
        async with db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            for statement in NOTIFY_TRIGGER_SQL:
                await conn.exec_driver_sql(statement)
        await db.dispose()
        worker = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is measured)
            [sys.executable, __file__, "relay-worker", url, launcher.KAFKA_BOOTSTRAP],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert worker.stdout is not None
        await asyncio.get_running_loop().run_in_executor(None, worker.stdout.readline)
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=launcher.KAFKA_BOOTSTRAP, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=f"relaybench-{run}")
        await consumer.start()
        received: dict[str, float] = {}

        async def read() -> None:
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                now = time.time()
                for recs in batch.values():
                    for r in recs:
                        received[r.key.decode() + "/" + dict(r.headers)["n"].decode()] = now

        reader = asyncio.create_task(read())
        await asyncio.sleep(3)  # the consumer joins its group; the relay settles
        idle = await idle_rates({"relay": worker.pid}, args.idle)
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        payload = b"x" * 1150
        committed: dict[str, float] = {}
        c0, t0 = cpu_s(worker.pid), time.monotonic()
        start = time.monotonic()
        txs = args.events // 2
        for i in range(txs):
            due = start + i / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            key = str(uuid.uuid4())
            rows = [(uuid.uuid4(), "MemberJoined", topic, key, zlib.crc32(key.encode()) % OUTBOX_SHARDS, payload,
                     json.dumps({"type": "MemberJoined", "version": "1", "n": str(j)})) for j in range(2)]
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO outbox (event_id, event_type, topic, key, shard, payload, headers) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)", rows)
            now = time.time()
            committed[f"{key}/0"] = committed[f"{key}/1"] = now
        deadline = time.monotonic() + 60
        while len(received) < len(committed) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        c1, t1 = cpu_s(worker.pid), time.monotonic()
        reader.cancel()
        await consumer.stop()
        await conn.close()
        lat = [1000 * (received[k] - committed[k]) for k in committed if k in received]
        print(f"relay: {len(received)} of {len(committed)} rows published at {args.rate} transactions/s "
              f"(2 rows each) in {t1 - t0:.1f} s")
        report("publish", len(committed), {"relay": worker.pid}, {"relay": c0}, {"relay": c1}, t1 - t0, idle)
        print(f"commit -> consumed: p50 {percentile(lat, 50):.1f} ms, p95 {percentile(lat, 95):.1f} ms, "
              f"p99 {percentile(lat, 99):.1f} ms, max {max(lat):.1f} ms")
    finally:
        if worker is not None:
            assert worker.stdin is not None
            worker.stdin.close()
            worker.wait(30)
        await kadmin.delete_topics([topic])
        await kadmin.close()
        await admin_pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin_pg.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("consume")
    c.add_argument("--events", type=int, default=3000)
    c.add_argument("--rate", type=float, default=200.0, help="events/s; 0: all at once (a backlog)")
    c.add_argument("--services", default="campaigns,events")
    c.add_argument("--idle", type=float, default=5.0)
    j = sub.add_parser("joins")
    j.add_argument("--seconds", type=float, default=20.0)
    j.add_argument("--concurrency", type=int, default=16)
    j.add_argument("--services", default="campaigns,events,membership")
    j.add_argument("--idle", type=float, default=5.0)
    r = sub.add_parser("relay")
    r.add_argument("--events", type=int, default=4000)
    r.add_argument("--rate", type=float, default=100.0, help="transactions/s, two rows each")
    r.add_argument("--idle", type=float, default=5.0)
    w = sub.add_parser("relay-worker")
    w.add_argument("url")
    w.add_argument("bootstrap")
    args = parser.parse_args()
    if args.cmd == "relay-worker":
        if os.environ.get("RELAY_CODE_ROOT"):  # another checkout's shared/ (e.g. the code before a change)
            sys.path.insert(0, os.environ["RELAY_CODE_ROOT"])
        asyncio.run(relay_worker(args.url, args.bootstrap))
    else:
        asyncio.run({"consume": consume, "joins": joins, "relay": relay}[args.cmd](args))


if __name__ == "__main__":
    main()
