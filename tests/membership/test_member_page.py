"""The organiser's page about one member (issue #15, "organiser's view of a person"): a timeline of what they did
across the services, learned from events (never another service's database), notes organisers keep (sealed with
the member's key, so erasure shreds them), tags, and what an organiser needs to follow up; names, never ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.membership import seeds
from shared.events.catalog import (
    ActionLinkedToMember,
    ActionTaken,
    AttendanceRecorded,
    CampaignLaunched,
    MeetingScheduled,
    NotificationFailed,
    NotificationSent,
    RsvpReceived,
)
from tests.membership.conftest import join_form, make_organiser, member_by_email, poll, unique_email
from tests.membership.test_reactions import publish

BIRMINGHAM = seeds.unit_id("region", "birmingham-black-country")
EAST_MIDLANDS = seeds.unit_id("region", "east-midlands")


async def _joined(client, db, name: str) -> str:
    email = unique_email("page")
    assert (await client.post("/join", data=join_form(email, name=name, postcode="B15 2TT"))).status_code in (
        200, 303)
    return str((await member_by_email(db, email))["id"])


async def test_the_timeline_shows_what_the_member_did_in_every_service_by_name(client, db):
    member_id = await _joined(client, db, "Jayaben Desai")
    meeting_id, campaign_id, rsvp_id = (str(uuid.uuid4()) for _ in range(3))
    starts = datetime.now(UTC) + timedelta(days=3)
    now = datetime.now(UTC)
    sent = NotificationSent(delivery_id=str(uuid.uuid4()), kind="meeting_reminder", recipient_id=member_id,
                            sent_at=now)
    await publish(
        MeetingScheduled(meeting_id=meeting_id, title="Grunwick solidarity meeting", kind="in_person",
                         scope_type="network", starts_at=starts, ends_at=starts + timedelta(hours=2),
                         public_url="https://example.org/m"),
        CampaignLaunched(campaign_id=campaign_id, title="Union recognition now", scope_type="network"),
        RsvpReceived(meeting_id=meeting_id, rsvp_id=rsvp_id, member_id=member_id, status="going"),
        # attendance recorded at the desk names only the RSVP: membership knows whose it is
        AttendanceRecorded(meeting_id=meeting_id, rsvp_id=rsvp_id, method="organiser", attended_at=now),
        ActionTaken(action_id=str(uuid.uuid4()), ask_id=str(uuid.uuid4()), campaign_id=campaign_id, kind="petition",
                    member_id=member_id, taken_at=now),
        ActionLinkedToMember(action_id=str(uuid.uuid4()), ask_id=str(uuid.uuid4()), campaign_id=campaign_id,
                             kind="write_to_mp", member_id=member_id, taken_at=now),
        sent,
        NotificationFailed(delivery_id=str(uuid.uuid4()), kind="campaign_update", recipient_id=member_id,
                           error="550 no such user jayaben@example.org", permanent=True),
    )
    _, headers = await make_organiser(db, "region", BIRMINGHAM)

    lines = ("Joined the network", "Said they are going to Grunwick solidarity meeting",
             "Attended Grunwick solidarity meeting", "Signed the petition in Union recognition now",
             "Wrote to their MP in Union recognition now", "Was sent an email: meeting reminder",
             "An email could not be delivered: campaign update")

    async def shown() -> str | None:
        page = await client.get(f"/members/{member_id}", headers=headers)
        assert page.status_code == 200
        return page.text if all(line in page.text for line in lines) else None

    text = await poll(shown)
    assert meeting_id not in text and campaign_id not in text and rsvp_id not in text  # names, never ids
    assert "550 no such user" not in text and "jayaben@example.org" not in text  # never a relay's error text
    assert "Last action" in text and now.strftime("%d %b %Y") in text
    # an event delivered again adds nothing (the marker after it, on the same partition, shows it was handled)
    marker = NotificationSent(delivery_id=str(uuid.uuid4()), kind="marker", recipient_id=member_id, sent_at=now)
    await publish(sent, marker)
    await poll(lambda: db.fetchval("SELECT 1 FROM member_activity WHERE ref_id = $1", marker.delivery_id))
    assert await db.fetchval("SELECT count(*) FROM member_activity WHERE ref_id = $1", sent.delivery_id) == 1


async def test_organisers_in_scope_add_notes_which_erasure_shreds(client, db):
    member_id = await _joined(client, db, "Asquith Xavier")
    _, regional = await make_organiser(db, "region", BIRMINGHAM)
    added = await client.post(f"/members/{member_id}/notes", headers=regional,
                              data={"note": "Called him: will speak at the depot meeting"})
    assert added.status_code == 303 and added.headers["location"] == f"/members/{member_id}#notes"
    await client.post(f"/members/{member_id}/notes", headers=regional, data={"note": "Second call: confirmed"})
    page = (await client.get(f"/members/{member_id}", headers=regional)).text
    assert page.index("Second call: confirmed") < page.index("Called him: will speak")  # newest first
    assert "Test Organiser" in page
    stored = await db.fetchval("SELECT string_agg(text::text, ' ') FROM member_notes WHERE member_id = $1", member_id)
    assert "depot" not in stored  # sealed with the member's key

    empty = await client.post(f"/members/{member_id}/notes", headers=regional, data={"note": "   "})
    assert empty.status_code == 422 and "Write a note" in empty.text
    _, elsewhere = await make_organiser(db, "region", EAST_MIDLANDS)
    refused = await client.post(f"/members/{member_id}/notes", headers=elsewhere, data={"note": "Not mine"})
    assert refused.status_code == 404
    assert await db.fetchval("SELECT count(*) FROM member_notes WHERE member_id = $1", member_id) == 2

    _, network = await make_organiser(db)
    assert (await client.post(f"/members/{member_id}/erase", headers=network)).status_code == 303
    assert await db.fetchval("SELECT key FROM subject_keys WHERE key_id = $1", member_id) is None


async def test_tags_are_added_from_a_list_or_new_and_removed_after_asking(client, db):
    first = await _joined(client, db, "Paul Stephenson")
    second = await _joined(client, db, "Roy Hackett")
    _, headers = await make_organiser(db, "region", BIRMINGHAM)
    name = f"Bus boycott {uuid.uuid4().hex[:6]}"
    assert (await client.post(f"/members/{first}/tags", headers=headers, data={"new_tag": name})).status_code == 303
    page = (await client.get(f"/members/{second}", headers=headers)).text
    assert f'<option value="{name}">{name}</option>' in page  # the tag there is, to choose for another member
    chosen = await client.post(f"/members/{second}/tags", headers=headers, data={"tag": name, "new_tag": ""})
    assert chosen.status_code == 303
    tag_id = await db.fetchval("SELECT id FROM tags WHERE name = $1", name)
    assert await db.fetchval("SELECT count(*) FROM taggings WHERE tag_id = $1", tag_id) == 2
    nothing = await client.post(f"/members/{first}/tags", headers=headers, data={"new_tag": " "})
    assert nothing.status_code == 422 and "Choose a tag" in nothing.text

    asked = await client.get(f"/members/{first}/tags/{tag_id}/remove", headers=headers)
    assert asked.status_code == 200 and f"Remove the tag “{name}” from Paul Stephenson?" in asked.text
    assert await db.fetchval("SELECT count(*) FROM taggings WHERE tag_id = $1", tag_id) == 2  # asking removes nothing
    _, elsewhere = await make_organiser(db, "region", EAST_MIDLANDS)
    refused = await client.post(f"/members/{first}/tags/{tag_id}/remove", headers=elsewhere)
    assert refused.status_code == 404
    removed = await client.post(f"/members/{first}/tags/{tag_id}/remove", headers=headers)
    assert removed.status_code == 303
    assert await db.fetchval("SELECT array_agg(member_id) FROM taggings WHERE tag_id = $1", tag_id) == [second]
    page = (await client.get(f"/members/{first}", headers=headers)).text
    assert "No tags yet" in page
