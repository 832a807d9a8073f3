"""Taking part: RSVP on the meeting's page, capacity and an ordered waitlist, cancellations that promote."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from shared.crypto import decode_key, unseal
from shared.events.envelope import Sealed
from tests.events.conftest import of_meeting, own_rsvp_link, schedule


def person() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {"name": f"Sam Rivera {tag}", "email": f"sam-{tag}@example.org"}


async def rsvp(client: httpx.AsyncClient, meeting_id: str, **fields: str) -> httpx.Response:
    return await client.post(f"/events/{meeting_id}/rsvp", data={**person(), **fields})


async def rsvp_as(client: httpx.AsyncClient, db, meeting_id: str) -> str:
    """RSVP as someone new; the link to their RSVP's page (which their email carries)."""
    who = person()
    response = await client.post(f"/events/{meeting_id}/rsvp", data=who)
    assert response.status_code == 303 and response.headers["location"] == f"/events/{meeting_id}/rsvp/sent"
    return await own_rsvp_link(db, meeting_id, who["email"])


async def _no_rsvp_stored(db, meeting_id: str) -> None:
    assert await db.fetchval("SELECT count(*) FROM rsvps WHERE meeting_id = $1", meeting_id) == 0
    assert await db.fetchval(
        "SELECT count(*) FROM outbox WHERE key = $1 AND event_type = 'RsvpReceived'", meeting_id) == 0


async def test_someone_new_rsvps_and_joins_with_their_details_sealed_in_the_event(client, organiser, db, kafka):
    meeting = await schedule(client, organiser)
    who = person()
    response = await client.post(f"/events/{meeting['id']}/rsvp",
                                 data={**who, "guests": "1", "join_network": "yes", "postcode": "b1 1aa"})
    assert response.status_code == 303 and response.headers["location"] == f"/events/{meeting['id']}/rsvp/sent"
    row = await db.fetchrow("SELECT id, status, guests, join_network FROM rsvps WHERE meeting_id = $1", meeting["id"])
    assert row["status"] == "going" and row["guests"] == 1 and row["join_network"]
    [received] = await kafka.wait_for(of_meeting(meeting["id"], "RsvpReceived"))
    assert received.data["rsvp_id"] == row["id"] and received.data["join_network"] is True
    assert received.data["email_consent"] is True and who["email"] not in received.model_dump_json()
    [key] = await kafka.wait_for(lambda e: e.type == "RsvpKeyIssued" and e.subject_id == row["id"])
    secret = decode_key(key.data["key"])
    assert unseal(Sealed(**received.data["email"]), secret) == who["email"]
    assert unseal(Sealed(**received.data["postcode"]), secret) == "B1 1AA"
    page = await client.get(await own_rsvp_link(db, meeting["id"], who["email"]))
    assert page.status_code == 200 and "You have a place" in page.text


async def test_the_joining_link_is_shown_only_to_people_with_a_place(client, organiser, db):
    link = f"https://meet.example.org/{uuid.uuid4().hex}"
    meeting = await schedule(client, organiser, kind="online", venue=None, online_url=link, capacity=1)
    first = await rsvp_as(client, db, meeting["id"])
    second = await rsvp_as(client, db, meeting["id"])
    assert link in (await client.get(first)).text
    waitlisted = (await client.get(second)).text
    assert "You are on the waitlist" in waitlisted and link not in waitlisted
    assert link not in (await client.get(f"/events/{meeting['id']}")).text


async def test_a_cancellation_promotes_the_first_on_the_waitlist(client, organiser, db, kafka):
    meeting = await schedule(client, organiser, capacity=2)
    links = [await rsvp_as(client, db, meeting["id"]) for _ in range(4)]
    rows = await db.fetch("SELECT id, status, waitlist_position FROM rsvps WHERE meeting_id = $1 ORDER BY created_at",
                          meeting["id"])
    assert [r["status"] for r in rows] == ["going", "going", "waitlisted", "waitlisted"]
    assert [r["waitlist_position"] for r in rows[2:]] == [1, 2]
    cancelled = await client.post(links[0] + "/cancel")
    assert cancelled.status_code == 303
    statuses = {r["id"]: r["status"] for r in await db.fetch("SELECT id, status FROM rsvps WHERE meeting_id = $1",
                                                              meeting["id"])}
    assert statuses[rows[0]["id"]] == "cancelled" and statuses[rows[2]["id"]] == "going"
    assert statuses[rows[3]["id"]] == "waitlisted"
    [promoted] = await kafka.wait_for(of_meeting(meeting["id"], "PromotedFromWaitlist"))
    assert promoted.data["rsvp_id"] == rows[2]["id"]
    await kafka.wait_for(lambda e: of_meeting(meeting["id"], "RsvpCancelled")(e) and e.data["rsvp_id"] == rows[0]["id"])
    assert await db.fetchval("SELECT going_count FROM meetings WHERE id = $1", meeting["id"]) == 2


async def test_rsvping_twice_keeps_one_place_and_one_event(client, organiser, db):
    meeting = await schedule(client, organiser)
    who = person()
    await client.post(f"/events/{meeting['id']}/rsvp", data=who)
    await client.post(f"/events/{meeting['id']}/rsvp", data={**who, "email": who["email"].upper()})
    assert await db.fetchval("SELECT count(*) FROM rsvps WHERE meeting_id = $1", meeting["id"]) == 1
    assert await db.fetchval(
        "SELECT count(*) FROM outbox WHERE key = $1 AND event_type = 'RsvpReceived'", meeting["id"]) == 1


async def test_an_rsvp_after_the_deadline_is_refused_and_nothing_changes(client, organiser, db):
    deadline = datetime.now(UTC) - timedelta(minutes=1)
    meeting = await schedule(client, organiser, rsvp_deadline=deadline.isoformat())
    response = await rsvp(client, meeting["id"])
    assert response.status_code == 409 and "RSVPs for this meeting have closed" in response.text
    await _no_rsvp_stored(db, meeting["id"])


async def test_an_rsvp_to_a_cancelled_meeting_is_refused_and_nothing_changes(client, organiser, db):
    meeting = await schedule(client, organiser)
    await client.post(f"/meetings/{meeting['id']}/cancel", json={}, headers=organiser)
    response = await rsvp(client, meeting["id"])
    assert response.status_code == 409 and "This meeting has been cancelled" in response.text
    await _no_rsvp_stored(db, meeting["id"])


async def test_an_rsvp_with_a_bad_email_shows_the_error_summary_and_stores_nothing(client, organiser, db):
    meeting = await schedule(client, organiser)
    response = await client.post(f"/events/{meeting['id']}/rsvp", data={"name": "Sam", "email": "sam-at-home"})
    assert response.status_code == 422
    assert 'class="error-summary"' in response.text and 'href="#email"' in response.text
    assert re.search(r'id="email"[^>]*aria-invalid="true"', response.text.replace("\n", " "))
    assert 'value="sam-at-home"' in response.text  # what was typed is kept
    await _no_rsvp_stored(db, meeting["id"])


async def test_joining_without_a_postcode_is_refused_and_stores_nothing(client, organiser, db):
    meeting = await schedule(client, organiser)
    response = await rsvp(client, meeting["id"], join_network="yes")
    assert response.status_code == 422 and "Enter your postcode" in response.text
    await _no_rsvp_stored(db, meeting["id"])


async def test_a_bot_filling_the_honeypot_is_shown_success_but_nothing_is_stored(client, organiser, db):
    meeting = await schedule(client, organiser)
    response = await rsvp(client, meeting["id"], website="http://spam.example")
    assert response.status_code == 303
    await _no_rsvp_stored(db, meeting["id"])


async def test_rsvp_to_a_meeting_that_does_not_exist_is_not_found(client, db):
    response = await rsvp(client, str(uuid.uuid4()))
    assert response.status_code == 404 and "Meeting not found" in response.text


async def test_500_simultaneous_rsvps_for_100_places_give_100_going_and_400_waitlisted(events_server, organiser, db):
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(base_url=events_server.base_url, timeout=120, limits=limits) as client:
        meeting = await schedule(client, organiser, capacity=100)
        responses = await asyncio.gather(*(rsvp(client, meeting["id"]) for _ in range(500)))
    assert [r.status_code for r in responses] == [303] * 500
    counts = dict(await db.fetch("SELECT status, count(*) FROM rsvps WHERE meeting_id = $1 GROUP BY status",
                                 meeting["id"]))
    assert counts == {"going": 100, "waitlisted": 400}
    positions = [r[0] for r in await db.fetch(
        "SELECT waitlist_position FROM rsvps WHERE meeting_id = $1 AND status = 'waitlisted' ORDER BY 1",
        meeting["id"])]
    assert positions == list(range(1, 401))
    assert await db.fetchval("SELECT going_count FROM meetings WHERE id = $1", meeting["id"]) == 100
    assert await db.fetchval(
        "SELECT count(*) FROM outbox WHERE key = $1 AND event_type = 'RsvpReceived'", meeting["id"]) == 500
