"""Membership reacting to other services: an RSVP or an action with `join_network` makes a member (source
`rsvp:<id>` / `action:<id>`), whichever order the key and the event arrive in; the engagement ladder's level."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from deploy.local import launcher
from services.membership import seeds
from shared import tokens
from shared.crypto import encode_key, new_key, seal
from shared.events.catalog import (
    ActionKeyIssued,
    ActionTaken,
    EngagementLevelChanged,
    RsvpKeyIssued,
    RsvpReceived,
)
from shared.events.envelope import Envelope, EventData
from tests.membership.conftest import join_form, member_by_email, of_member, poll, unique_email


async def publish(*items: EventData | Envelope) -> None:
    """Publish as the other services' relays do: the envelope as value, the subject as key."""
    producer = AIOKafkaProducer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for item in items:
            env = item if isinstance(item, Envelope) else Envelope.wrap(item)
            topic = item.payload().topic if isinstance(item, Envelope) else item.topic
            await producer.send_and_wait(
                topic, value=env.to_bytes(), key=env.subject_id.encode(), headers=[("type", env.type.encode())]
            )
    finally:
        await producer.stop()


async def tombstone(topic: str, key: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=None, key=key.encode())
    finally:
        await producer.stop()


def rsvp(email: str, *, key: bytes, rsvp_id: str, **overrides) -> RsvpReceived:
    fields = dict(
        meeting_id=str(uuid.uuid4()),
        rsvp_id=rsvp_id,
        status="going",
        join_network=True,
        email_consent=True,
        email=seal(email, key, key_id=rsvp_id, owner="events"),
        name=seal("Len Johnson", key, key_id=rsvp_id, owner="events"),
        postcode=seal("ng7 1aa", key, key_id=rsvp_id, owner="events"),
    )
    fields.update(overrides)
    return RsvpReceived(**fields)


async def test_an_rsvp_asking_to_join_makes_a_member_once_even_when_delivered_twice(membership_server, db, kafka):
    email, rsvp_id, key = unique_email("rsvp"), str(uuid.uuid4()), new_key()
    event = Envelope.wrap(rsvp(email, key=key, rsvp_id=rsvp_id))
    await publish(RsvpKeyIssued(key_id=rsvp_id, key=encode_key(key)), event, event)  # the RSVP redelivered

    member = await poll(lambda: member_by_email(db, email), 30)
    assert member["source"] == f"rsvp:{rsvp_id}" and member["name"] == "Len Johnson"
    assert member["postcode"] == "NG7 1AA" and member["region_id"] == seeds.unit_id("region", "east-midlands")
    assert member["email_consent"] is True and member["engagement_level"] == "informed"
    [joined] = await kafka.wait_for(of_member(member["id"], "MemberJoined"))
    assert joined.data["source"] == f"rsvp:{rsvp_id}" and joined.data["group_ids"] == [
        seeds.unit_id("group", "nottingham")
    ]
    await asyncio.sleep(1.5)
    assert await db.fetchval("SELECT count(*) FROM members WHERE email_normalised = $1", email) == 1
    assert len(kafka.envelopes(of_member(member["id"], "MemberJoined"))) == 1


async def test_an_rsvp_that_arrives_before_its_key_waits_for_it(membership_server, db):
    email, rsvp_id, key = unique_email("early"), str(uuid.uuid4()), new_key()
    await publish(rsvp(email, key=key, rsvp_id=rsvp_id))
    await poll(lambda: db.fetchval("SELECT count(*) FROM parked_events WHERE subject_id = $1", rsvp_id), 30)
    assert await member_by_email(db, email) is None
    await publish(RsvpKeyIssued(key_id=rsvp_id, key=encode_key(key)))
    member = await poll(lambda: member_by_email(db, email), 30)
    assert member["source"] == f"rsvp:{rsvp_id}"
    assert await db.fetchval("SELECT count(*) FROM parked_events WHERE subject_id = $1", rsvp_id) == 0


async def test_an_rsvp_whose_key_was_destroyed_joins_nobody(membership_server, db):
    email, rsvp_id, key = unique_email("shredded"), str(uuid.uuid4()), new_key()
    await publish(RsvpKeyIssued(key_id=rsvp_id, key=encode_key(key)))
    await poll(lambda: db.fetchval("SELECT key IS NOT NULL FROM received_keys WHERE key_id = $1", rsvp_id), 30)
    await tombstone("events.subject-keys", rsvp_id)
    await poll(lambda: db.fetchval("SELECT destroyed_at IS NOT NULL FROM received_keys WHERE key_id = $1", rsvp_id))
    await publish(rsvp(email, key=key, rsvp_id=rsvp_id))
    await asyncio.sleep(2)
    assert await member_by_email(db, email) is None


async def test_rsvps_without_join_or_from_members_change_nobody(membership_server, db):
    email, rsvp_id, key = unique_email("nojoin"), str(uuid.uuid4()), new_key()
    await publish(
        RsvpKeyIssued(key_id=rsvp_id, key=encode_key(key)), rsvp(email, key=key, rsvp_id=rsvp_id, join_network=False)
    )
    await asyncio.sleep(2)
    assert await member_by_email(db, email) is None


async def test_an_existing_member_who_rsvps_and_joins_keeps_their_level_and_place(client, membership_server, db):
    email = unique_email("known")
    await client.post(
        "/join", data=join_form(email, name="Jessica Huntley", engagement_level="organise", postcode="B1 1AA")
    )
    before = dict(await member_by_email(db, email))
    rsvp_id, key = str(uuid.uuid4()), new_key()
    event = Envelope.wrap(rsvp(email.upper(), key=key, rsvp_id=rsvp_id))
    await publish(RsvpKeyIssued(key_id=rsvp_id, key=encode_key(key)), event)
    await poll(lambda: db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event.event_id), 30)
    rows = await db.fetch("SELECT * FROM members WHERE email_normalised = $1", email)
    assert [dict(r) for r in rows] == [before]  # nothing it would change, so nothing to ask them either
    assert await db.fetchval("SELECT count(*) FROM consent_records WHERE member_id = $1", before["id"]) == 1
    assert await db.fetchval("SELECT count(*) FROM member_requests WHERE member_id = $1", before["id"]) == 0


async def test_an_rsvp_asking_to_join_with_the_address_of_someone_who_left_only_asks_them(
    client, membership_server, db, kafka, membership_settings
):
    email = unique_email("gone")
    await client.post("/join", data=join_form(email))
    member_id = (await member_by_email(db, email))["id"]
    preferences = tokens.sign(membership_settings.secret_key, tokens.PREFERENCES, {"m": member_id})
    assert (await client.post("/me/leave", data={"token": preferences})).status_code == 200
    left = dict(await member_by_email(db, email))

    rsvp_id, key = str(uuid.uuid4()), new_key()
    await publish(RsvpKeyIssued(key_id=rsvp_id, key=encode_key(key)), rsvp(email, key=key, rsvp_id=rsvp_id))
    [asked] = await kafka.wait_for(of_member(member_id, "JoinChangeRequested"))
    assert asked.data["left"] is True
    assert dict(await member_by_email(db, email)) == left  # still left, still without consent
    assert left["status"] == "left" and left["email_consent"] is False


async def test_an_action_asking_to_join_makes_a_member_with_its_group(membership_server, db, kafka):
    email, action_id, key = unique_email("action"), str(uuid.uuid4()), new_key()
    action = ActionTaken(
        action_id=action_id,
        ask_id=str(uuid.uuid4()),
        campaign_id=str(uuid.uuid4()),
        kind="petition",
        group_id=seeds.unit_id("group", "coventry"),
        join_network=True,
        email_consent=False,
        email=seal(email, key, key_id=action_id, owner="campaigns"),
        name=seal("Basil Manning", key, key_id=action_id, owner="campaigns"),
        taken_at=datetime.now(UTC),
    )
    await publish(action, ActionKeyIssued(key_id=action_id, key=encode_key(key)))
    member = await poll(lambda: member_by_email(db, email), 30)
    assert member["source"] == f"action:{action_id}" and member["email_consent"] is False
    assert member["postcode"] is None
    groups = await db.fetch("SELECT group_id FROM member_groups WHERE member_id = $1", member["id"])
    assert [g["group_id"] for g in groups] == [seeds.unit_id("group", "coventry")]
    [joined] = await kafka.wait_for(of_member(member["id"], "MemberJoined"))
    assert joined.data["email_consent"] is False and joined.data["postcode"] is None


async def test_engagement_level_changes_are_recorded_beside_the_members_own_choice(client, membership_server, db):
    email = unique_email("ladder")
    await client.post("/join", data=join_form(email, engagement_level="take_action"))
    member_id = (await member_by_email(db, email))["id"]
    await publish(
        EngagementLevelChanged(
            member_id=member_id, level="activist", previous_level="participant", reason="3 actions, 1 meeting attended"
        )
    )
    await poll(lambda: db.fetchval("SELECT ladder_level = 'activist' FROM members WHERE id = $1", member_id), 30)
    assert (await member_by_email(db, email))["engagement_level"] == "take_action"
