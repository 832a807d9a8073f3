"""CPU of the notifications process per welcome email, and how long a welcome takes inside notifications.

Not one of bench/run.py's benchmarks: a tool for the welcome path (consume MemberJoined -> recipient mirror ->
delivery -> SMTP). It produces N members' SubjectKeyIssued and MemberJoined straight onto Kafka at a steady rate
(as membership's relay would), waits until every welcome delivery is sent, and reports the notifications
process's CPU (utime + stime of /proc/<pid>/stat, minus what it spends idle over as long, measured first) per
welcome, and produce -> sent latency (sent = the delivery's commit point, just before the relay's final '.').

    GROUNDSWELL_PORT_OFFSET=6000 GROUNDSWELL_STATE_DIR=$PWD/.run/h1 .venv/bin/python bench/welcome_cpu.py 300 20
    ... bench/welcome_cpu.py 40 2 --join-first      # MemberJoined before its key: the join parks, the key releases it

WELCOME_CPU_PID=<pid> measures another process (e.g. an older checkout's service started by hand).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402

from bench.common import asyncpg_dsn, launcher, service_pid  # noqa: E402
from shared import topics  # noqa: E402
from shared.crypto import encode_key, new_key, seal  # noqa: E402
from shared.events.catalog import MemberJoined, SubjectKeyIssued  # noqa: E402
from shared.events.envelope import Envelope  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


async def main(n: int, rate: float, join_first: bool) -> None:
    pid = int(os.environ.get("WELCOME_CPU_PID") or service_pid("notifications") or 0)
    if not pid:
        raise SystemExit("notifications is not running on this stack")
    conn = await asyncpg.connect(asyncpg_dsn("notifications"))
    producer = AIOKafkaProducer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        before = cpu_s(pid)
        await asyncio.sleep(5)
        idle = (cpu_s(pid) - before) / 5
        tag = uuid.uuid4().hex[:8]
        produced: dict[str, float] = {}
        start_cpu, t0 = cpu_s(pid), time.time()
        for i in range(n):
            mid, key = str(uuid.uuid4()), new_key()
            joined = MemberJoined(
                member_id=mid,
                email=seal(f"welcome-cpu-{tag}-{i}@bench.example.org", key, key_id=mid, owner="membership"),
                name=seal(f"Ada {i}", key, key_id=mid, owner="membership"),
                region_id="bench-region",
                group_ids=["bench-group"],
                engagement_level="informed",
                email_consent=True,
                consent_wording_version="v1",
                source="bench",
                confirmation_required=True,
                joined_at=datetime.now(UTC),
            )
            messages = [
                (topics.MEMBERSHIP_SUBJECT_KEYS, Envelope.wrap(SubjectKeyIssued(key_id=mid, key=encode_key(key)))),
                (topics.MEMBERSHIP_MEMBERS, Envelope.wrap(joined)),
            ]
            for topic, envelope in reversed(messages) if join_first else messages:
                await producer.send_and_wait(topic, envelope.to_bytes(), key=mid.encode())
            produced[mid] = time.time()
            await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.time()))
        ids = list(produced)
        rows: list[asyncpg.Record] = []
        while time.time() - t0 < 300:
            rows = await conn.fetch(
                "SELECT recipient_id, created_at, sent_at FROM deliveries "
                "WHERE kind = 'welcome' AND status = 'sent' AND recipient_id = ANY($1)",
                ids,
            )
            if len(rows) >= n:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # what follows a send (NotificationSent through the relay) counts too
        elapsed = time.time() - t0
        used = cpu_s(pid) - start_cpu - idle * elapsed
        total = [(r["sent_at"].timestamp() - produced[r["recipient_id"]]) * 1000 for r in rows]
        consumed = [(r["created_at"].timestamp() - produced[r["recipient_id"]]) * 1000 for r in rows]
        sending = [(r["sent_at"] - r["created_at"]).total_seconds() * 1000 for r in rows]
        print(
            f"{len(rows)}/{n} welcomes sent at {rate:g}/s ({'join first' if join_first else 'key first'}); "
            f"notifications CPU {used:.2f} s ({idle * 1000:.0f} ms/s idle subtracted) = "
            f"{used / max(len(rows), 1) * 1000:.2f} ms per welcome"
        )
        print(
            f"produce -> sent p50 {pct(total, 0.5):.1f} ms, p95 {pct(total, 0.95):.1f} ms, "
            f"p99 {pct(total, 0.99):.1f} ms; "
            f"produce -> queued (consumer's transaction began) p50 {pct(consumed, 0.5):.1f} ms; "
            f"queued -> sent p50 {pct(sending, 0.5):.1f} ms"
        )
        await conn.execute("DELETE FROM recipients WHERE member_id = ANY($1)", ids)
    finally:
        await producer.stop()
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("members", type=int, nargs="?", default=300)
    parser.add_argument("rate", type=float, nargs="?", default=20.0, help="joins a second")
    parser.add_argument("--join-first", action="store_true", help="MemberJoined before its key")
    args = parser.parse_args()
    asyncio.run(main(args.members, args.rate, args.join_first))
