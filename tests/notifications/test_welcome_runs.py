"""Welcomes for joins that come in together, against the running notifications service: joins whose keys came
first, joins that arrive before their keys (they wait, and are welcomed when the keys come), a member whose
confirmation waits behind their join, and a join delivered twice. Each person gets exactly one welcome."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from deploy.local import launcher
from shared import topics
from shared.crypto import encode_key, new_key
from shared.events.catalog import MemberConfirmed, SubjectKeyIssued
from shared.events.envelope import Envelope
from tests.support.people import member_joined, unique_email


async def test_joins_in_one_batch_keys_late_or_early_each_get_one_welcome(system, mail, notifications_db):
    people = [(str(uuid.uuid4()), new_key(), unique_email("run")) for _ in range(12)]
    early, late = people[:6], people[6:]  # keys before the joins / joins before their keys
    confirmed_id = late[0][0]
    producer = AIOKafkaProducer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, acks="all", enable_idempotence=True,
                                linger_ms=20)
    await producer.start()
    try:

        async def send(topic: str, envelope: Envelope) -> None:
            await producer.send(topic, envelope.to_bytes(), key=envelope.subject_id.encode())

        def key_issued(member_id: str, key: bytes) -> Envelope:
            return Envelope.wrap(SubjectKeyIssued(key_id=member_id, key=encode_key(key)))

        joins = {
            mid: Envelope.wrap(member_joined(mid, key=key, email=email, name=f"Ada{i} Runner", source="test-runs"))
            for i, (mid, key, email) in enumerate(people)
        }
        for mid, key, _ in early:
            await send(topics.MEMBERSHIP_SUBJECT_KEYS, key_issued(mid, key))
        await producer.flush()
        for mid, _, _ in people:
            await send(topics.MEMBERSHIP_MEMBERS, joins[mid])
        await send(
            topics.MEMBERSHIP_MEMBERS,
            Envelope.wrap(MemberConfirmed(member_id=confirmed_id, confirmed_at=datetime.now(UTC))),
        )
        await producer.flush()

        # The late joins (and the confirmation behind one of them) wait for their keys.
        late_ids = [mid for mid, _, _ in late]
        for _ in range(150):
            parked = await notifications_db.fetchval(
                "SELECT count(*) FROM parked_events WHERE subject_id = ANY($1)", late_ids
            )
            if parked == len(late) + 1:
                break
            await asyncio.sleep(0.2)
        assert parked == len(late) + 1
        for mid, key, _ in late:
            await send(topics.MEMBERSHIP_SUBJECT_KEYS, key_issued(mid, key))
        await send(topics.MEMBERSHIP_MEMBERS, joins[early[0][0]])  # delivered again: no second welcome
        await producer.flush()
    finally:
        await producer.stop()

    for i, (_, _, email) in enumerate(people):
        [welcome] = await mail.wait_for(email, timeout=60)
        assert welcome["subject"].endswith(f", Ada{i}")
        assert "/join/confirm?token=" in welcome["text"]
    assert await notifications_db.fetchval(
        "SELECT status FROM recipients WHERE member_id = $1", confirmed_id
    ) == "confirmed"
    assert await notifications_db.fetchval(
        "SELECT count(*) FROM parked_events WHERE subject_id = ANY($1)", late_ids
    ) == 0
    await asyncio.sleep(2)
    for _, _, email in people:
        assert len(await mail.messages(email)) == 1, email
