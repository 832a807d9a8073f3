"""Two outbox relays on one outbox: every event published exactly once, each key's order kept."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

from deploy.local import launcher
from shared.events.catalog import MemberConfirmed
from shared.events.envelope import Envelope
from shared.outbox import Outbox, OutboxRelay
from tests.support.kafka import read_topic


async def test_two_relay_instances_never_publish_an_event_twice_and_keep_key_order(scratch_db, scratch_topics):
    db, tables = scratch_db
    topic = f"test.relay.{uuid.uuid4().hex[:8]}"
    await scratch_topics(topic, partitions=3)
    outbox = Outbox(tables.outbox)
    keys = [f"member-{i}" for i in range(25)]
    written: dict[str, list[str]] = defaultdict(list)

    relays = [
        OutboxRelay(db, launcher.KAFKA_BOOTSTRAP, f"relay-{n}", batch_size=50, poll_interval_s=0.2) for n in "ab"
    ]
    for relay in relays:
        await relay.start()
    try:
        # Written in many small transactions while both relays run, so they compete for the same rows.
        for round_ in range(40):
            async with db.transaction() as session:
                envelopes = []
                for key in keys:
                    env = Envelope.wrap(MemberConfirmed(member_id=key, confirmed_at="2026-11-21T10:00:00Z"))
                    envelopes.append(env)
                    written[key].append(str(env.event_id))
                await outbox.add(session, *envelopes, topic=topic)
            await asyncio.sleep(0.01 * (round_ % 3))
        total = sum(len(v) for v in written.values())
        for _ in range(300):
            if sum(r.published_total for r in relays) >= total:
                break
            await asyncio.sleep(0.1)
    finally:
        for relay in relays:
            await relay.stop()

    records = await read_topic(topic)
    ids = [Envelope.from_bytes(r.value).event_id for r in records]
    assert len(ids) == total == 1000
    assert len(set(ids)) == total, "an event was published twice"
    assert all(r.published_total > 0 for r in relays), "both relays should have shared the work"
    seen: dict[str, list[str]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        seen[r.key.decode()].append(str(Envelope.from_bytes(r.value).event_id))
    assert seen == written, "a key's events were published out of order"
    async with db.transaction() as session:
        from sqlalchemy import text

        assert (await session.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))).scalar() == 0
