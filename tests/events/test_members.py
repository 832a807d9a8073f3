"""The read model of members fed by membership's events: who may be invited where, erased on MemberErased."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from deploy.local import launcher
from shared import topics
from shared.events.catalog import MemberErased, MemberJoined, MemberLeft, OrganisationUnitDefined
from shared.events.envelope import Envelope, EventData
from tests.events.conftest import poll, schedule
from tests.support.kafka import read_topic
from tests.support.people import member_joined


async def publish(*events: EventData) -> None:
    """Publish as membership's relay does: the envelope as value, the subject as key."""
    producer = AIOKafkaProducer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for event in events:
            env = Envelope.wrap(event)
            await producer.send_and_wait(event.topic, value=env.to_bytes(), key=env.subject_id.encode(),
                                         headers=[("type", env.type.encode())])
    finally:
        await producer.stop()


def joined(member_id: str, **overrides) -> MemberJoined:
    fields = {"region_id": "region-west-midlands", "group_ids": ["group-coventry"], **overrides}
    return member_joined(member_id, **fields)


async def test_a_member_who_joins_and_leaves_is_kept_with_places_and_only_sealed_personal_data(events_server, db):
    member_id = str(uuid.uuid4())
    await publish(joined(member_id, email="kept-sealed@example.org", name="Kept Sealed"))
    row = await poll(lambda: db.fetchrow("SELECT * FROM members WHERE member_id = $1", member_id))
    assert row["region_id"] == "region-west-midlands" and row["group_ids"] == ["group-coventry"]
    assert row["status"] == "active" and set(row.keys()) == {
        "member_id", "email_hash", "name", "email", "region_id", "group_ids", "subteam_ids", "status", "updated_at"}
    assert "kept-sealed@example.org" not in str(dict(row)) and "Kept Sealed" not in str(dict(row))
    await publish(MemberLeft(member_id=member_id, reason="moved away"))
    await poll(lambda: db.fetchval("SELECT status = 'left' FROM members WHERE member_id = $1", member_id))


async def test_erasing_a_member_forgets_them_and_shreds_their_rsvp_keys_keeping_the_link(
        client, organiser, events_server, db, kafka):
    member_id = str(uuid.uuid4())
    await publish(joined(member_id))
    await poll(lambda: db.fetchrow("SELECT 1 FROM members WHERE member_id = $1", member_id))
    meeting = await schedule(client, organiser)
    added = await client.post(f"/meetings/{meeting['id']}/rsvps", headers=organiser,
                              json={"member_id": member_id, "name": "Jo Erased", "email": "jo-erased@example.org"})
    assert added.status_code == 201, added.text
    rsvp_id = added.json()["id"]
    assert await db.fetchval("SELECT count(*) FROM subject_keys WHERE key_id = $1", rsvp_id) == 1

    await publish(MemberErased(member_id=member_id, erased_at=datetime.now(UTC)))
    await poll(lambda: db.fetchval("SELECT count(*) = 0 FROM members WHERE member_id = $1", member_id))
    row = await db.fetchrow("SELECT member_id, name, email, status FROM rsvps WHERE id = $1", rsvp_id)
    # The address goes; the link stays (the place was the member's, and still counts as theirs).
    assert row["member_id"] == member_id and row["name"] is None and row["email"] is None
    assert row["status"] == "going"  # the place still counts
    assert await db.fetchval("SELECT count(*) FROM subject_keys WHERE key_id = $1 AND key IS NOT NULL", rsvp_id) == 0
    await kafka.wait_for_tombstone("events.subject-keys", rsvp_id)


async def test_a_join_from_an_rsvp_links_the_rsvp_to_the_new_member(client, organiser, events_server, db):
    meeting = await schedule(client, organiser)
    response = await client.post(f"/events/{meeting['id']}/rsvp", data={
        "name": "Ana New", "email": f"ana-{uuid.uuid4().hex[:8]}@example.org", "join_network": "yes",
        "postcode": "CV1 1AA"})
    assert response.status_code == 303
    rsvp_id = await db.fetchval("SELECT id FROM rsvps WHERE meeting_id = $1", meeting["id"])
    member_id = str(uuid.uuid4())
    await publish(joined(member_id, source=f"rsvp:{rsvp_id}"))
    linked = await poll(lambda: db.fetchval("SELECT member_id FROM rsvps WHERE id = $1", rsvp_id))
    if linked != member_id:
        # The running membership service also reacts to this RSVP and may announce the new member first: the
        # RSVP is then linked to its member, whose MemberJoined carries the same source (and ours changes nothing).
        announced = [Envelope.from_bytes(r.value) for r in await read_topic(topics.MEMBERSHIP_MEMBERS)
                     if r.value and b'"MemberJoined"' in r.value]
        assert any(e.subject_id == linked and e.data["source"] == f"rsvp:{rsvp_id}" for e in announced)


async def test_regions_and_groups_name_the_filters_and_scope_group_meetings(client, organiser, events_server, db):
    region, group = f"region-{uuid.uuid4().hex[:6]}", f"group-{uuid.uuid4().hex[:6]}"
    await publish(OrganisationUnitDefined(unit_id=region, kind="region", name="East Midlands"),
                  OrganisationUnitDefined(unit_id=group, kind="group", name="Nottingham Central", parent_id=region))
    await poll(lambda: db.fetchval("SELECT count(*) = 2 FROM units WHERE unit_id = ANY($1)", [region, group]))
    meeting = await schedule(client, organiser, scope_type="group", scope_id=group)
    assert meeting["region_id"] == region
    listing = await client.get("/events", params={"region": region})
    assert "East Midlands" in listing.text and meeting["id"] in listing.text
